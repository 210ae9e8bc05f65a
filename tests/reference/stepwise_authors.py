"""The authors' half of the step-by-step check (tests/reference/check_stepwise.sh): their training step with real
transformers and torch, from the initial weights twostage saved, on the same rows in the same order.

    python3 stepwise_authors.py RUN_DIR/initial data/sst2/train.tsv STEPS LR > losses.json

As two_stage_reweight.py trains (METHOD.md): BertModel's pooler output into nn.Sequential(Linear(H, 50), ReLU,
Linear(50, 2)) with no dropout between them, cross-entropy, transformers.AdamW(correct_bias=True, eps 1e-8, no weight
decay), clip_grad_norm_(1.0), get_linear_schedule_with_warmup(0 warm-up steps, STEPS), batch 16. Dropout is off in
the model's config, so both sides compute the same function; padding is per batch, as twostage's (the same results
as the authors' padding to 128 under the attention mask).
"""
import csv
import json
import sys
import warnings

import torch
from safetensors.torch import load_file
from transformers import AdamW, BertModel, BertTokenizer, get_linear_schedule_with_warmup

warnings.filterwarnings("ignore", category=FutureWarning)


def main(folder, train_path, steps, lr):
    tokenizer = BertTokenizer.from_pretrained(folder)
    bert = BertModel.from_pretrained(folder)
    weights = load_file(f"{folder}/model.safetensors")
    hidden = bert.config.hidden_size
    head = torch.nn.Sequential(torch.nn.Linear(hidden, 50), torch.nn.ReLU(), torch.nn.Linear(50, 2))
    head.load_state_dict({k[len("classifier."):]: v.float() for k, v in weights.items() if k.startswith("classifier.")})
    bert.train()
    head.train()
    parameters = list(bert.parameters()) + list(head.parameters())
    optimizer = AdamW(parameters, lr=lr, eps=1e-8, correct_bias=True, weight_decay=0.0)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, steps)
    with open(train_path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    losses = []
    for step in range(steps):
        batch = rows[step * 16:(step + 1) * 16]
        encoded = tokenizer([r["sentence"] for r in batch], padding="longest", truncation=True, max_length=128,
                            return_tensors="pt")
        labels = torch.tensor([int(r["label"]) for r in batch])
        pooled = bert(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).pooler_output
        loss = torch.nn.functional.cross_entropy(head(pooled), labels)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    print(json.dumps(losses))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
