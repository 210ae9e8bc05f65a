#!/usr/bin/env bash
# OpenBLAS (with the kernels the host chooses) against Debian's BLIS (libblis4-pthread), side by side in one run:
# every round runs each BLAS in turn, so a change in the machine's load hits both alike; medians over the rounds.
# LibTorch reaches the BLAS through libblas.so.3, so BLIS is swapped in with LD_LIBRARY_PATH (and the reference
# LAPACK, since OpenBLAS's liblapack.so.3 would load libopenblas.so.0 beside it).
#
#   benchmarks/compare_blas.sh [BUILD_DIR]    (ROUNDS=3 THREADS=2 by default)
#
# Per BLAS: sgemm 1024³ and the step's own products (bench_train_step's probe), and a training step of the default
# encoder (all-MiniLM-L6-v2's shapes) at batch 16 and sequence 34 (SST-2's median longest row in a random batch of
# 16) and of bert-base at sequence 32.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
rounds=${ROUNDS:-3}
threads=${THREADS:-2}
bench="$build/benchmarks/bench_train_step"
blis_dir=/usr/lib/x86_64-linux-gnu/blis-pthread
lapack=/usr/lib/x86_64-linux-gnu/lapack/liblapack.so.3
[ -f "$blis_dir/libblas.so.3" ] || { echo "compare_blas: apt-get install libblis4-pthread" >&2; exit 2; }
[ -f "$lapack" ] || { echo "compare_blas: apt-get install liblapack3" >&2; exit 2; }
swap=$(mktemp -d)
trap 'rm -rf "$swap"' EXIT
ln -s "$blis_dir/libblas.so.3" "$swap/libblas.so.3"
ln -s "$lapack" "$swap/liblapack.so.3"

run() {  # run BLAS ARGS...: the benchmark under one BLAS
  local blas=$1; shift
  if [ "$blas" = BLIS ]; then
    LD_LIBRARY_PATH="$swap" BLIS_NUM_THREADS=$threads "$bench" --blas-core as-is --blas-threads "$threads" "$@"
  else
    "$bench" --blas-threads "$threads" "$@"
  fi
}

minilm=(--config data/models/all-minilm-l6-v2/config.json --seq-lengths 34)
bertbase=(--seq-lengths 32)
out=$(mktemp)
for round in $(seq "$rounds"); do
  for blas in OpenBLAS BLIS; do
    echo "round $round $blas kernels $(run "$blas" --sgemm-probe sgemm | awk '/^BLAS kernels/ {$1=$2=""; print}')" >>"$out"
    run "$blas" --sgemm-probe own "${minilm[@]}" --steps 3 | awk -v b="$blas" '/^probe/ {print "sgemm " b, $4, $5}' >>"$out"
    for model in minilm bertbase; do
      declare -n args=$model
      run "$blas" "${args[@]}" --steps 3 --sgemm-limit 0 |
        awk -v b="$blas" -v m="$model" '/train step/ {for (i = 1; i <= NF; i++) if ($i == "GFLOP/s;") r = $(i - 1);
          sub(/^.*= /, "", $0); print "step " b, m, r}' >>"$out"
    done
  done
done
grep '^round 1' "$out" | sed 's/^round 1 /  /'
python3 - "$out" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "sgemm":
        rows[(f[1], "sgemm 1024³")].append(float(f[2])); rows[(f[1], "MiniLM step's products")].append(float(f[3]))
    elif f[0] == "step":
        rows[(f[1], f[2] + " training step")].append(float(f[3]))
what = sorted({w for _, w in rows}, key=lambda w: ["sgemm 1024³", "MiniLM step's products", "minilm training step",
                                                   "bertbase training step"].index(w))
print(f"{'GFLOP/s, median of rounds':30} {'OpenBLAS':>9} {'BLIS':>9} {'BLIS/OpenBLAS':>14}")
for w in what:
    o, b = statistics.median(rows[("OpenBLAS", w)]), statistics.median(rows[("BLIS", w)])
    print(f"{w:30} {o:9.1f} {b:9.1f} {b / o:14.2f}")
PY
rm -f "$out"
