#!/usr/bin/env python3
"""The tables of docs/llm_augmentation/README.md from a reproduce.sh run folder: rejections, tokens, and the test
metrics after stage 1 (from the JSON log's "stage" events) and after both stages (metrics.json)."""
import json
import statistics
import sys

out = sys.argv[1]


def summary(name):
    with open(f"{out}/{name}/summary.json") as f:
        return json.load(f)


print("| paraphrases | requests | replies | accepted | " + " | ".join(
    ["empty", "refusal", "echoed_prompt", "same_as_source", "duplicate", "near_copy", "drifted"]) + " | seconds |")
print("|---|" + "---:|" * 11)
for name in ("llm", "eda"):
    s = summary(name)
    per_request = s.get("llm", {}).get("per_request", 1)
    r = s["rejections"]
    print(f"| {name} | {s['requests']} | {s['requests'] * per_request} | {s['accepted']} | " + " | ".join(
        str(r.get(k, 0)) for k in ["empty", "refusal", "echoed_prompt", "same_as_source", "duplicate", "near_copy",
                                   "drifted"]) + f" | {s['seconds']:.0f} |")
print()
print("| per_request | requests | prompt tokens | completion tokens (as reported) | tokens per accepted paraphrase |")
print("|---:|---:|---:|---:|---:|")
for name in ("tokens_n1", "tokens_n2"):
    llm = summary(name)["llm"]
    used, per = llm["tokens_used"], llm["tokens_per_accepted"]
    print(f"| {llm['per_request']} | {llm['requests_sent']} | {used['prompt']} | {used['completion']} | "
          f"{per['total']:.1f} (prompt {per['prompt']:.1f}, completion {per['completion']:.1f}) |")
print()


def stage_one(run):
    values = {}
    with open(f"{out}/{run}.events.jsonl") as f:
        for line in f:
            event = json.loads(line)
            fields = event.get("fields", event)
            if fields.get("stage") == "stage 1" and "metrics" in fields:
                values[fields["seed"]] = fields["metrics"]
    return values


def cell(values):
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


print("| training | after | accuracy | macro-F1 | minority F1 | per seed accuracy (7 / 42 / 106) |")
print("|---|---|---:|---:|---:|---|")
for run, label in (("two_stage_llm", "stage 1 on LLM paraphrases"), ("two_stage_eda", "stage 1 on EDA paraphrases"),
                   ("vanilla", "vanilla")):
    if run != "vanilla":
        first = stage_one(run)
        seeds = sorted(first)
        minority = [first[s]["f1_per_class"][0] for s in seeds]
        print(f"| {label} | stage 1 | {cell([first[s]['accuracy'] for s in seeds])} | "
              f"{cell([first[s]['macro_f1'] for s in seeds])} | {cell(minority)} | "
              + " / ".join(f"{first[s]['accuracy']:.3f}" for s in seeds) + " |")
    with open(f"{out}/{run}/metrics.json") as f:
        m = json.load(f)
    per_seed = m["per_seed"]
    print(f"| {label} | {'stage 2' if run != 'vanilla' else 'fine-tuning'} | "
          f"{m['mean']['accuracy']:.3f} ± {m['std']['accuracy']:.3f} | "
          f"{m['mean']['macro_f1']:.3f} ± {m['std']['macro_f1']:.3f} | "
          f"{m['mean']['f1_minority']:.3f} ± {m['std']['f1_minority']:.3f} | "
          + " / ".join(f"{per_seed[s]['accuracy']:.3f}" for s in sorted(per_seed, key=int)) + " |")
