"""Live parity with Hugging Face transformers (issue 21): models move both ways with the same logits, the tokenizer
gives the same ids, and training steps give the same losses and parameters. Run by CTest (tests/parity/run.sh):

    python parity.py TWOSTAGE_BINARY WORK_DIR export|import|tokenizer|training [--loss ce|ldam]
                     [--optimizer adamw_hf|adamw] [--mismatch]

export     random models made and saved by twostage (a classifier, a masked LM) load in transformers with no missing,
           unexpected or mismatched keys and give the same logits (<= 1e-4).
import     random models that transformers makes and saves (several sizes, gelu/gelu_new/relu/silu, float32, fp16
           and bf16 files, odd head sizes, classifier_dropout, a cased vocabulary) give the same logits in twostage.
tokenizer  the same ids as BertTokenizer on 3,000 generated texts, lower-cased and cased.
training   from twostage's initialisation, with dropout off and twostage's batches, N steps of AdamW (transformers'
           or torch's arithmetic), clipping, warm-up and linear decay give the same losses and parameters (<= 1e-4
           relative), for cross-entropy or for LDAM with effective-number weights (the formula in
           tests/reference/authors_protocol.py).
--mismatch makes one side deliberately wrong (a different activation, casing, optimiser or margin): the test must
then report a MISMATCH, and CTest runs each such variant expecting that line.
"""
import argparse
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import torch
import transformers
from transformers import (BertConfig, BertForMaskedLM, BertForSequenceClassification, BertTokenizer,
                          get_linear_schedule_with_warmup)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reference"))
from authors_protocol import ldam_cb_loss  # noqa: E402  (the published formula, shared with the protocol script)

SIDE = ROOT / "tests" / "parity" / "twostage_side.lua"
VOCAB = ROOT / "data" / "vocab" / "bert-base-uncased" / "vocab.txt"
TOLERANCE = 1e-4
TEXTS = [
    "hide new secretions from the parental units",
    "contains no wit , only labored gags",
    "that loves its characters and communicates something rather beautiful about human nature",
    "A Film of Remarkable Grace, and NOT a minute too long!",
    "naïve, café-style charm … or is it?",
    "東京 and 北京 in one sentence",
    "unbelievably unimaginatively overwrought",
    "",
]


class Mismatch(Exception):
    """twostage and transformers disagree (as opposed to a side that failed to run, which raises anything else)."""


def check(condition, message):
    if not condition:
        raise Mismatch(message)


def tokenizer_folder(work, name, lowercase):
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    BertTokenizer(str(VOCAB), do_lower_case=lowercase).save_pretrained(str(folder))
    return name


def run_twostage(binary, work, request):
    (work / "request.json").write_text(json.dumps(request))
    result = subprocess.run([binary, "run", str(SIDE), "--quiet", "--threads", "1", "--out", str(work)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"twostage failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return json.loads((work / "twostage.json").read_text())


def largest_difference(ours, theirs):
    return (torch.tensor(ours, dtype=torch.float64) - theirs.double()).abs().max().item()


def compare_scores(work, answer, kind, columns, label):
    """transformers' logits on twostage's own ids and mask, against twostage's; the ids against BertTokenizer's."""
    folder = str(work / answer["folder"])
    input_ids = torch.tensor(answer["input_ids"])
    mask = torch.tensor(answer["attention_mask"])
    expected = BertTokenizer.from_pretrained(folder)(TEXTS, padding="longest", return_tensors="pt")
    check(torch.equal(expected["input_ids"], input_ids), f"{label}: token ids differ from BertTokenizer's")
    model_class = BertForMaskedLM if kind == "mlm" else BertForSequenceClassification
    model = model_class.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask).logits
    if kind == "mlm":
        logits = logits[:, :, columns]
    # Padded positions of an MLM are not defined the same way by both (nor used): compare real tokens only.
    keep = mask.bool() if kind == "mlm" else torch.ones(len(TEXTS), dtype=torch.bool)
    difference = largest_difference(answer["logits"], logits) if kind != "mlm" else (
        (torch.tensor(answer["logits"], dtype=torch.float64)[keep] - logits.double()[keep]).abs().max().item())
    print(f"{label}: largest logit difference {difference:.2e} (logits up to {logits.abs().max().item():.2f})")
    check(difference <= TOLERANCE, f"{label}: logits differ by {difference:.2e} > {TOLERANCE}")


def small_config(**overrides):
    config = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, hidden_act="gelu", max_position_embeddings=64, type_vocab_size=2,
                  initializer_range=0.3, layer_norm_eps=1e-12, hidden_dropout_prob=0.1,
                  attention_probs_dropout_prob=0.1)
    config.update(overrides)
    return config


def loading_problems(model_class, folder):
    """from_pretrained's own report, and every warning it logged."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = transformers.utils.logging.get_logger("transformers.modeling_utils")
    logger.addHandler(handler)
    try:
        model, info = model_class.from_pretrained(folder, output_loading_info=True)
    finally:
        logger.removeHandler(handler)
    problems = {key: value for key, value in info.items() if value}
    problems.update({"warning": [r.getMessage() for r in records if r.levelno >= logging.WARNING]})
    return {key: value for key, value in problems.items() if value}


def test_export(binary, work, mismatch):
    vocab = tokenizer_folder(work, "vocab", True)
    classifier = small_config(hidden_act="gelu")
    mlm = small_config(hidden_size=48, num_attention_heads=3, intermediate_size=96, hidden_act="gelu_new")
    columns = list(range(0, 30522, 97)) + [1996, 2143, 2001]
    answer = run_twostage(binary, work, {
        "create": [{"kind": "classifier", "config": classifier, "seed": 3, "num_labels": 3, "folder": "classifier",
                    "tokenizer": vocab},
                   {"kind": "mlm", "config": mlm, "seed": 4, "folder": "mlm", "tokenizer": vocab}],
        "score": [{"kind": "classifier", "folder": "classifier", "num_labels": 3},
                  {"kind": "mlm", "folder": "mlm"}],
        "texts": TEXTS, "columns": columns})
    if mismatch:  # transformers reads another activation than the one twostage trained with
        path = work / "classifier" / "config.json"
        path.write_text(json.dumps(dict(json.loads(path.read_text()), hidden_act="relu")))
    for model_class, folder in [(BertForSequenceClassification, "classifier"), (BertForMaskedLM, "mlm")]:
        problems = loading_problems(model_class, str(work / folder))
        check(not problems, f"{folder}: transformers reported {problems}")
    compare_scores(work, answer["score"][0], "classifier", columns, "classifier saved by twostage")
    compare_scores(work, answer["score"][1], "mlm", columns, "masked LM saved by twostage")


IMPORTS = [  # (folder, kind, file dtype, tokenizer lower-cases, config)
    ("hf_gelu_f32", "classifier", torch.float32, True, small_config(classifier_dropout=0.3)),
    ("hf_gelu_new_f16_head15", "classifier", torch.float16, True,
     small_config(hidden_size=60, num_attention_heads=4, intermediate_size=100, num_hidden_layers=3,
                  hidden_act="gelu_new")),
    ("hf_relu_bf16_head7", "classifier", torch.bfloat16, True,
     small_config(hidden_size=21, num_attention_heads=3, intermediate_size=50, hidden_act="relu")),
    ("hf_silu_cased", "classifier", torch.float32, False,
     small_config(hidden_size=32, num_attention_heads=2, intermediate_size=64, hidden_act="silu",
                  classifier_dropout=0.0)),
    ("hf_mlm_gelu_f16", "mlm", torch.float16, True, small_config(hidden_size=48, num_attention_heads=4)),
    ("hf_mlm_silu_bf16_head9", "mlm", torch.bfloat16, False,
     small_config(hidden_size=36, num_attention_heads=4, hidden_act="silu")),
]


def test_import(binary, work, mismatch):
    columns = list(range(0, 30522, 89)) + [1996, 2143, 2001]
    for index, (folder, kind, dtype, lowercase, config) in enumerate(IMPORTS):
        torch.manual_seed(100 + index)
        model_class = BertForMaskedLM if kind == "mlm" else BertForSequenceClassification
        model = model_class(BertConfig(num_labels=3, **config)).to(dtype)
        model.save_pretrained(str(work / folder), safe_serialization=True)
        BertTokenizer(str(VOCAB), do_lower_case=lowercase).save_pretrained(str(work / folder))
    if mismatch:  # twostage reads another activation than the one transformers computes with
        path = work / IMPORTS[0][0] / "config.json"
        saved = path.read_text()
        path.write_text(json.dumps(dict(json.loads(saved), hidden_act="gelu_new")))
    answer = run_twostage(binary, work, {
        "score": [{"kind": kind, "folder": folder, "num_labels": 3} for folder, kind, *_ in IMPORTS],
        "texts": TEXTS, "columns": columns})
    if mismatch:
        path.write_text(saved)
    for (folder, kind, dtype, *_), scored in zip(IMPORTS, answer["score"]):
        compare_scores(work, scored, kind, columns, f"{folder} ({kind}, {str(dtype)[6:]})")


def generated_texts(count, seed):
    """Words of SST-2 and of the vocabulary, cased at random, with accents, CJK, emoji, combining marks, control and
    zero-width characters, punctuation, digits and very long words: one text a line, so no line breaks."""
    rng = random.Random(seed)
    words = [line.split("\t")[0].split() for line in (ROOT / "data" / "sst2" / "train.tsv").read_text().split("\n")[1:3000]]
    words = [w for line in words for w in line]
    pieces = [p for p in VOCAB.read_text().split("\n") if p and not p.startswith("[")]
    extras = ["é", "ñ", "Ü", "ß", "İ", "ﬁ", "東京", "한국어", "😀", "👍🏽", "e\u0301", "\u200b", "\u00ad", "\u0007",
              "\t", "\u3000", "…", "—", "“quoted”", "$3.50", "12,000", "C++", "don't", "U.S.A.", "\ufeff", "ǅ",
              "Ⅻ", "x" * 120, "supercalifragilisticexpialidocious", "[CLS]", "[MASK]", "##ing", "\u0000"]
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(0, 25)):
            roll = rng.random()
            word = rng.choice(words) if roll < 0.6 else rng.choice(pieces) if roll < 0.8 else rng.choice(extras)
            if rng.random() < 0.2:
                word = word.upper() if rng.random() < 0.5 else word.capitalize()
            if rng.random() < 0.1:
                word = unicodedata.normalize(rng.choice(["NFD", "NFKC"]), word)
            parts.append(word)
        texts.append(rng.choice([" ", "  ", " ", ""]).join(parts) if parts else "")
    return texts


def test_tokenizer(binary, work, mismatch):
    texts = generated_texts(3000, seed=21)
    (work / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    for lowercase in (True, False):
        tokenizer = BertTokenizer(str(VOCAB), do_lower_case=lowercase)
        expected = [tokenizer(text)["input_ids"] for text in texts]
        command = [binary, "tokenize", "--vocab", str(VOCAB)] + ([] if lowercase != mismatch else ["--cased"])
        with open(work / "texts.txt", "rb") as stdin:
            result = subprocess.run(command, stdin=stdin, capture_output=True)
        check(result.returncode == 0, f"twostage tokenize failed: {result.stderr.decode()}")
        ours = [[int(i) for i in line.split()] for line in result.stdout.decode().split("\n")[:-1]]
        check(len(ours) == len(texts), f"{len(ours)} lines of ids for {len(texts)} texts")
        differ = [i for i, (a, b) in enumerate(zip(ours, expected)) if a != b]
        tokens = sum(len(ids) for ids in expected)
        print(f"{'lower-cased' if lowercase else 'cased'}: {len(texts)} texts, {tokens} tokens, {len(differ)} differ")
        if differ:
            first = differ[0]
            raise Mismatch(f"text {first} ({texts[first]!r}): {ours[first]} against {expected[first]}")


def training_rows(work, count):
    """SST-2 sentences with three imbalanced classes (6:3:1), so that LDAM's margins and weights differ."""
    lines = (ROOT / "data" / "sst2" / "train.tsv").read_text().split("\n")[1:count + 1]
    rows = ["sentence\tlabel"] + [f"{line.split(chr(9))[0]}\t{0 if i % 10 < 6 else 1 if i % 10 < 9 else 2}"
                                  for i, line in enumerate(lines)]
    (work / "train.tsv").write_text("\n".join(rows) + "\n")
    return [int(row.split("\t")[1]) for row in rows[1:]]


def test_training(binary, work, loss_kind, optimizer_kind, mismatch):
    steps, batch_size, lr, warmup, clip, decay = 12, 8, 5e-4, 3, 1.0, 0.01
    loss = {"kind": "ce"} if loss_kind == "ce" else {
        "kind": "ldam", "weights": "effective", "beta": 0.9999, "max_margin": 0.5, "scale": 2.0}
    vocab = tokenizer_folder(work, "vocab", True)
    labels = training_rows(work, steps * batch_size)
    config = small_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    answer = run_twostage(binary, work, {
        "create": [{"kind": "classifier", "config": config, "seed": 5, "num_labels": 3, "folder": "initial",
                    "tokenizer": vocab}],
        "train": {"folder": "initial", "data": "train.tsv", "num_labels": 3, "steps": steps,
                  "batch_size": batch_size, "lr": lr, "warmup_steps": warmup, "clip": clip,
                  "optimizer": optimizer_kind, "weight_decay": decay, "loss": loss, "out": "trained"}})

    model = BertForSequenceClassification.from_pretrained(str(work / "initial"))
    model.train()
    no_decay = ["bias", "LayerNorm.weight"]
    groups = [{"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
               "weight_decay": decay},
              {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
               "weight_decay": 0.0}]
    use_hf = (optimizer_kind == "adamw_hf") != (mismatch and loss_kind == "ce")
    optimizer = (transformers.AdamW(groups, lr=lr, eps=1e-8, correct_bias=True) if use_hf
                 else torch.optim.AdamW(groups, lr=lr, eps=1e-8))
    schedule = get_linear_schedule_with_warmup(optimizer, warmup, steps)
    counts = [labels.count(c) for c in range(3)]
    margin = 0.4 if mismatch else 0.5
    loss_fn = (torch.nn.functional.cross_entropy if loss_kind == "ce"
               else ldam_cb_loss(counts, beta=0.9999, max_margin=margin, scale=2.0))
    worst_loss = 0.0
    for step, batch in enumerate(answer["train"]["steps"], 1):
        logits = model(input_ids=torch.tensor(batch["input_ids"]),
                       attention_mask=torch.tensor(batch["attention_mask"])).logits
        value = loss_fn(logits, torch.tensor(batch["labels"]))
        optimizer.zero_grad()
        value.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        schedule.step()
        relative = abs(batch["loss"] - value.item()) / abs(value.item())
        worst_loss = max(worst_loss, relative)
        print(f"step {step:2d}: twostage {batch['loss']:.8f}  transformers {value.item():.8f}  "
              f"relative {relative:.1e}  gradient norm {norm.item():.3f}")
    check(len(answer["train"]["steps"]) == steps, f"twostage trained {len(answer['train']['steps'])} steps")
    trained = BertForSequenceClassification.from_pretrained(str(work / "trained")).state_dict()
    worst_parameter, worst_name = 0.0, ""
    for name, theirs in model.state_dict().items():
        if name.endswith("position_ids"):
            continue
        ours = trained[name]
        if name.endswith("attention.self.key.bias"):
            # Its gradient is zero in exact arithmetic (softmax ignores a constant added to a row of scores), so
            # on each side Adam follows rounding noise from its zero start: only its size is checked.
            size = max(ours.abs().max().item(), theirs.abs().max().item())
            check(size <= lr * steps, f"{name} moved {size:.2e}, more than lr x steps")
            continue
        relative = ((ours - theirs).abs().max() / theirs.abs().max().clamp(min=1e-12)).item()
        if relative > worst_parameter:
            worst_parameter, worst_name = relative, name
    print(f"losses: largest relative difference {worst_loss:.2e} over {steps} steps; parameters: largest relative "
          f"difference {worst_parameter:.2e} ({worst_name})")
    check(worst_loss <= TOLERANCE, f"losses differ by {worst_loss:.2e} relative > {TOLERANCE}")
    check(worst_parameter <= TOLERANCE, f"{worst_name} differs by {worst_parameter:.2e} relative > {TOLERANCE}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("twostage")
    parser.add_argument("work")
    parser.add_argument("test", choices=["export", "import", "tokenizer", "training"])
    parser.add_argument("--loss", choices=["ce", "ldam"], default="ce")
    parser.add_argument("--optimizer", choices=["adamw_hf", "adamw"], default="adamw_hf")
    parser.add_argument("--mismatch", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    transformers.utils.logging.set_verbosity_warning()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    try:
        if args.test == "training":
            test_training(args.twostage, work, args.loss, args.optimizer, args.mismatch)
        else:
            {"export": test_export, "import": test_import, "tokenizer": test_tokenizer}[args.test](
                args.twostage, work, args.mismatch)
    except Mismatch as mismatch:
        print(f"MISMATCH: {mismatch}")
        return 1
    print("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
