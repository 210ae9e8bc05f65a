#!/usr/bin/env bash
# The statistical side-by-side check (issue 25): the authors' protocol in Python (tests/reference/authors_protocol.py,
# real transformers and torch) against recipes/vanilla.lua and recipes/two_stage_reweight.lua, on the same model and
# the same rows (their down-sampling at rate 0.2 of SST-2's first 12,000 training rows: 1,328 + 6,641), GLUE dev as
# the test set, one epoch per stage, over SEEDS. Passes when, for both recipes, the means of accuracy and of
# minority-class F1 lie within two pooled standard deviations of each other.
#   tests/reference/compare_protocol.sh [PYTHON] [SEEDS] [OUT]
# PYTHON must import transformers (4.39.3), torch and pandas (./setup.sh test makes .cache/python). Run from a
# built checkout; about 20 minutes a seed for both recipes and both sides on two cores. Resumable: a finished job
# (its JSON or metrics.json in OUT) is not run again. Learning rates: the default model's, chosen on a validation
# split (data/models/all-minilm-l6-v2/MODEL.md): 1e-4 for stage 2, 3e-4 for the reweighting stage 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${1:-.cache/python/bin/python}
seeds=${2:-7,42,106,190,191}
out=${3:-runs/compare_protocol}
model=data/models/all-minilm-l6-v2
lr_stage1=3e-4
lr_stage2=1e-4
mkdir -p "$out"
head -n 12001 data/sst2/train.tsv > "$out/train_first12000.tsv"
# Two jobs at a time, one thread each; AVX2 kernels where OpenBLAS would not pick them itself (twostage's run
# chooses its own, --blas-core auto).
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
grep -q avx2 /proc/cpuinfo && grep -q fma /proc/cpuinfo && export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}

jobs=()
for seed in ${seeds//,/ }; do
  for method in vanilla two_stage_reweight; do
    jobs+=("twostage $method $seed" "authors $method $seed")
  done
done

run_job() {
  local side=$1 method=$2 seed=$3
  local epochs_stage1=1; [ "$method" = vanilla ] && epochs_stage1=0
  if [ "$side" = twostage ]; then
    local folder="$out/twostage_${method}_seed$seed"
    [ -f "$folder/metrics.json" ] && return 0
    build/twostage run "recipes/$method.lua" --quiet --threads 1 --out "$folder" \
      --set model="$model" --set train="$out/train_first12000.tsv" --set test=data/sst2/dev.tsv --set ratio=0.2 \
      --set seeds="$seed" --set lr_stage1=$lr_stage1 --set lr_stage2=$lr_stage2
  else
    local result="$out/authors_${method}_seed$seed.json"
    [ -f "$result" ] && return 0
    "$python" tests/reference/authors_protocol.py --model "$model" --train "$out/train_first12000.tsv" \
      --test data/sst2/dev.tsv --rate 0.2 --seed "$seed" --epochs-stage-1 $epochs_stage1 \
      --lr-stage-1 $lr_stage1 --lr-stage-2 $lr_stage2 > "$result.tmp"
    mv "$result.tmp" "$result"
  fi
  echo "done: $side $method seed $seed"
}
export -f run_job
export out model python lr_stage1 lr_stage2
printf '%s\n' "${jobs[@]}" | xargs -P 2 -I{} bash -c 'run_job {}'

"$python" - "$out" "$seeds" <<'PY'
import json, math, statistics, sys
out, seeds = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
def twostage(method, seed):
    return json.load(open(f"{out}/twostage_{method}_seed{seed}/metrics.json"))["per_seed"][str(seed)]
def authors(method, seed):
    return json.load(open(f"{out}/authors_{method}_seed{seed}.json"))
ok = True
lines = ["| recipe | side | metric | " + " / ".join(map(str, seeds)) + " | mean ± sd |", "|---|---|---|---|---:|"]
verdicts = []
for method in ["vanilla", "two_stage_reweight"]:
    for metric in ["accuracy", "f1_minority"]:
        values = {}
        for side, read in [("authors' script", authors), ("twostage", twostage)]:
            values[side] = [read(method, s)[metric] for s in seeds]
            v = values[side]
            lines.append(f"| {method} | {side} | {metric} | " + " / ".join(f"{x:.3f}" for x in v)
                         + f" | {statistics.mean(v):.3f} ± {statistics.stdev(v):.3f} |")
        a, b = values["authors' script"], values["twostage"]
        pooled = math.sqrt((statistics.variance(a) + statistics.variance(b)) / 2)
        gap = abs(statistics.mean(a) - statistics.mean(b))
        within = gap <= 2 * pooled
        ok &= within
        in_sds = f"{gap / pooled:.2f}" if pooled > 0 else "inf"
        verdicts.append(f"{method} {metric}: means differ by {gap:.4f} = {in_sds} pooled SDs "
                        f"({'within' if within else 'OUTSIDE'} 2)")
print("\n".join(lines))
print("\n".join(verdicts))
sys.exit(0 if ok else 1)
PY
