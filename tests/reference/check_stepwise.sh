#!/usr/bin/env bash
# Step-by-step check of twostage's training arithmetic against the authors' (transformers.AdamW, their head), with
# dropout off and the same batches in the same order: every step's loss must agree within 1e-5 (relative). The
# issue asked 1e-4, but torch's AdamW arithmetic already differs from transformers' by 6e-5 within 10 steps here, so
# 1e-4 could not tell the two optimisers apart.
#   tests/reference/check_stepwise.sh [PYTHON] [STEPS] [OPTIMIZER]
# PYTHON (default .cache/python, which ./setup.sh test makes) must import transformers and torch; run from a built checkout.
# OPTIMIZER is twostage's side (adamw_hf); `adamw`, torch's arithmetic, must make the check fail.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${1:-.cache/python/bin/python}
steps=${2:-30}
optimizer=${3:-adamw_hf}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r data/models/all-minilm-l6-v2 "$work/model"
"$python" - "$work/model/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["hidden_dropout_prob"] = 0.0
config["attention_probs_dropout_prob"] = 0.0
json.dump(config, open(path, "w"), indent=2)
PY
build/twostage run tests/reference/stepwise_twostage.lua --quiet --out "$work/run" --set model="$work/model" \
  --set steps="$steps" --set optimizer="$optimizer"
"$python" tests/reference/stepwise_authors.py "$work/run/initial" data/sst2/train.tsv "$steps" 1e-4 \
  > "$work/authors.json"
"$python" - "$work/run/losses.json" "$work/authors.json" <<'PY'
import json, sys
ours, theirs = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert len(ours) == len(theirs), (len(ours), len(theirs))
worst = 0.0
print("step  twostage      authors       relative difference")
for step, (a, b) in enumerate(zip(ours, theirs), 1):
    relative = abs(a - b) / max(abs(b), 1e-12)
    worst = max(worst, relative)
    print(f"{step:4d}  {a:.8f}  {b:.8f}  {relative:.2e}")
print(f"largest relative difference {worst:.2e} over {len(ours)} steps")
sys.exit(0 if worst <= 1e-5 else 1)
PY
