"""The authors' protocol (two_stage_reweight.py, as METHOD.md reads it), with real transformers and torch: one seed's
vanilla or two-stage-reweighting run, from down-sampling to the test metrics. The statistical half of the side-by-side
check (tests/reference/compare_protocol.sh) runs it for several seeds beside recipes/vanilla.lua and
recipes/two_stage_reweight.lua.

    python3 authors_protocol.py --model DIR --train TSV --test TSV --seed 7 [--epochs-stage-1 0] > metrics.json

Their choices, kept: pandas' sample(random_state=42) keeps floor(n_pos * rate) negatives, the combined set shuffled
with the same seed; BertTokenizer, truncation at 128; BertModel's pooler output into nn.Sequential(Linear(H, 50),
ReLU, Linear(50, C)) with PyTorch's default initialisation and no dropout before it; BERT's dropout on in training;
batch 16 from a shuffled DataLoader; transformers.AdamW(correct_bias=True, eps 1e-8, no weight decay), a fresh one
and a fresh linear schedule without warm-up per stage, stepped per batch; clip_grad_norm_ at 1.0. Stage 1 trains the
head, the pooler and the top encoder layer with LDAM (margins n^-1/4, largest 0.5, s = 1) and effective-number class
weights (beta 0.9999, summing to C) under the weighted mean; stage 2 trains everything with cross-entropy.
One change, which leaves the function the same under the attention mask: each batch is padded to its longest row
(--padding fixed pads to 128 as they do, about five times slower on SST-2).
"""
import argparse
import json
import random
import sys
import time
import warnings

import numpy as np
import pandas as pd
import torch
from transformers import AdamW, BertModel, BertTokenizer, get_linear_schedule_with_warmup

warnings.filterwarnings("ignore", category=FutureWarning)


def down_sample(frame, rate, seed=42):
    """Their down_sample.py: keep floor(n_pos * rate) negatives (label 0), every positive, then shuffle."""
    positives = frame[frame.label == 1]
    negatives = frame[frame.label == 0].sample(n=int(len(positives) * rate), random_state=seed)
    return pd.concat([negatives, positives]).sample(frac=1, random_state=seed).reset_index(drop=True)


class Classifier(torch.nn.Module):
    def __init__(self, folder, num_classes):
        super().__init__()
        self.bert = BertModel.from_pretrained(folder)
        hidden = self.bert.config.hidden_size
        self.head = torch.nn.Sequential(torch.nn.Linear(hidden, 50), torch.nn.ReLU(), torch.nn.Linear(50, num_classes))

    def forward(self, input_ids, attention_mask):
        return self.head(self.bert(input_ids=input_ids, attention_mask=attention_mask).pooler_output)


def ldam_cb_loss(counts, beta=0.9999, max_margin=0.5, scale=1.0):
    counts = np.asarray(counts, dtype=np.float64)
    weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    weights = weights / weights.sum() * len(counts)
    margins = 1.0 / np.sqrt(np.sqrt(counts))
    margins = margins * (max_margin / margins.max())
    weights = torch.tensor(weights, dtype=torch.float32)
    margins = torch.tensor(margins, dtype=torch.float32)

    def loss(logits, labels):
        adjusted = logits - torch.nn.functional.one_hot(labels, logits.shape[1]) * margins[labels].unsqueeze(1)
        return torch.nn.functional.cross_entropy(scale * adjusted, labels, weight=weights)
    return loss


def batches(tokenizer, texts, labels, batch_size, shuffle, padding):
    order = torch.randperm(len(texts)).tolist() if shuffle else list(range(len(texts)))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        encoded = tokenizer([texts[i] for i in rows], truncation=True, max_length=128, return_tensors="pt",
                            padding="max_length" if padding == "fixed" else "longest")
        yield encoded["input_ids"], encoded["attention_mask"], torch.tensor([labels[i] for i in rows])


def train_stage(model, tokenizer, texts, labels, epochs, lr, loss_fn, trainable, padding):
    if epochs == 0:
        return
    for name, parameter in model.named_parameters():
        parameter.requires_grad = trainable(name)
    parameters = [p for p in model.parameters() if p.requires_grad]
    steps = epochs * ((len(texts) + 15) // 16)
    optimizer = AdamW(parameters, lr=lr, eps=1e-8, correct_bias=True, weight_decay=0.0)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, steps)
    model.train()
    for _ in range(epochs):
        for input_ids, mask, batch_labels in batches(tokenizer, texts, labels, 16, True, padding):
            loss = loss_fn(model(input_ids, mask), batch_labels)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()


def evaluate(model, tokenizer, texts, labels, num_classes, padding):
    model.eval()
    predictions = []
    with torch.no_grad():
        for input_ids, mask, _ in batches(tokenizer, texts, labels, 64, False, padding):
            predictions += model(input_ids, mask).argmax(1).tolist()
    predictions, labels = np.array(predictions), np.array(labels)
    f1 = []
    for c in range(num_classes):
        tp = np.sum((predictions == c) & (labels == c))
        fp = np.sum((predictions == c) & (labels != c))
        fn = np.sum((predictions != c) & (labels == c))
        f1.append(float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn > 0 else 0.0)
    return {"accuracy": float(np.mean(predictions == labels)), "f1_per_class": f1, "macro_f1": float(np.mean(f1))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--epochs-stage-1", type=int, default=1)
    parser.add_argument("--epochs-stage-2", type=int, default=1)
    parser.add_argument("--lr-stage-1", type=float, default=1e-4)
    parser.add_argument("--lr-stage-2", type=float, default=1e-5)
    parser.add_argument("--padding", choices=["longest", "fixed"], default="longest")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()

    read = dict(sep="\t", quoting=3, keep_default_na=False)
    train = down_sample(pd.read_csv(args.train, **read), args.rate)
    test = pd.read_csv(args.test, **read)
    texts, labels = train.sentence.tolist(), train.label.astype(int).tolist()
    num_classes = 2
    counts = [labels.count(c) for c in range(num_classes)]

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    tokenizer = BertTokenizer.from_pretrained(args.model)
    model = Classifier(args.model, num_classes)
    top_layer = f"bert.encoder.layer.{model.bert.config.num_hidden_layers - 1}."

    def stage_1_trains(name):
        return name.startswith(("head.", "bert.pooler.", top_layer))
    train_stage(model, tokenizer, texts, labels, args.epochs_stage_1, args.lr_stage_1, ldam_cb_loss(counts),
                stage_1_trains, args.padding)
    train_stage(model, tokenizer, texts, labels, args.epochs_stage_2, args.lr_stage_2,
                torch.nn.functional.cross_entropy, lambda name: True, args.padding)
    metrics = evaluate(model, tokenizer, test.sentence.tolist(), test.label.astype(int).tolist(), num_classes,
                       args.padding)
    metrics["f1_minority"] = metrics["f1_per_class"][int(np.argmin(counts))]
    metrics.update(seed=args.seed, train_class_counts=counts, seconds=time.time() - started)
    json.dump(metrics, sys.stdout)
    print()


if __name__ == "__main__":
    main()
