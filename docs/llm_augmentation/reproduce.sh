#!/usr/bin/env bash
# Stage 1 on paraphrases of a local LLM against stage 1 on EDA paraphrases of the same rows (docs/llm_augmentation).
#   docs/llm_augmentation/reproduce.sh [OUT]        (default OUT: runs/llm_augmentation; resumable: the LLM replies
#                                                    are cached in OUT, and finished steps are skipped)
# 1. rows.tsv: the first 200 majority and 40 minority rows of SST-2's train (label 1 and 0), rate 0.2.
# 2. llama.cpp's server (tests/llm_server/serve.py, SmolLM2-135M-Instruct Q4_1) paraphrases them:
#    recipes/augment_llm.lua fills both classes to 200, 2 paraphrases per request, seed 1 per pass, with the
#    similarity band on the default encoder; then 40 rows once more with 1 per request, for the token comparison.
# 3. EDA paraphrases of the same rows (augment_llm.lua --set augmenter=eda).
# 4. recipes/two_stage_augment.lua on rows.tsv with each aug.csv, seeds 7 42 106, GLUE dev as the test set, 10 epochs
#    a stage; recipes/vanilla.lua on the same rows; tables.py prints the tables of README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-runs/llm_augmentation}
twostage=build/twostage
mkdir -p "$out"
tests/llm_server/install.sh

if [ ! -s "$out/rows.tsv" ]; then
  awk -F'\t' 'NR == 1 { print; next }
              $2 == 1 && ones < 200 { ones++; print; next }
              $2 == 0 && zeros < 40 { zeros++; print }' data/sst2/train.tsv > "$out/rows.tsv"
fi

server_pid=
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; true' EXIT
serve() {
  rm -f "$out/address"
  # A fixed port: the cache key holds base_url, so a resumed run finds its replies only at the same address.
  .cache/llm-server/bin/python tests/llm_server/serve.py "$out/address" --port 18473 >"$out/server.log" 2>&1 &
  server_pid=$!
  while [ ! -s "$out/address" ]; do kill -0 "$server_pid"; sleep 0.2; done
  base_url=$(cat "$out/address")
}

llm_settings=(--set train="$out/rows.tsv" --set ratio=1 --set api_key_env= --set model=smollm2 --set max_tokens=64
              --set concurrency=2 --set temperature=1 --set request_seed=1 --set allow_short=true)
if [ ! -s "$out/llm/aug.csv" ]; then
  [ -n "$server_pid" ] || serve
  /usr/bin/time -f "%e s" -o "$out/llm.time" "$twostage" run recipes/augment_llm.lua --out "$out/llm" \
    --set base_url="$base_url" "${llm_settings[@]}" --set per_request=2 \
    --set similarity_model=data/models/all-minilm-l6-v2
fi
for per_request in 1 2; do
  if [ ! -s "$out/tokens_n$per_request/summary.json" ]; then
    [ -n "$server_pid" ] || serve
    "$twostage" run recipes/augment_llm.lua --out "$out/tokens_n$per_request" --set base_url="$base_url" \
      "${llm_settings[@]}" --set per_request=$per_request --set limit=40 --set target=40
  fi
done
[ -n "$server_pid" ] && kill "$server_pid" && server_pid=

if [ ! -s "$out/eda/aug.csv" ]; then
  "$twostage" run recipes/augment_llm.lua --out "$out/eda" --set train="$out/rows.tsv" --set ratio=1 \
    --set augmenter=eda --set allow_short=true
fi

# Both stages on each source, 10 epochs each: the training budget was fixed before any run (the paper's one epoch
# is 25 steps of stage 1 on 400 paraphrases, too few to move the head), not chosen on the test set. The JSON log
# has the test metrics after stage 1 too ("stage" events). Vanilla fine-tuning on the same rows for scale.
common=(--set train="$out/rows.tsv" --set ratio=0 --set seeds=7,42,106 --set epochs_stage2=10)
for source in llm eda; do
  run=$out/two_stage_$source
  if [ ! -s "$run/metrics.json" ]; then
    /usr/bin/time -f "%e s" -o "$run.time" "$twostage" run recipes/two_stage_augment.lua --out "$run" \
      --log-json "$run.events.jsonl" "${common[@]}" --set epochs_stage1=10 --set augmented="$out/$source/aug.csv"
  fi
done
if [ ! -s "$out/vanilla/metrics.json" ]; then
  /usr/bin/time -f "%e s" -o "$out/vanilla.time" "$twostage" run recipes/vanilla.lua --out "$out/vanilla" \
    --log-json "$out/vanilla.events.jsonl" "${common[@]}"
fi
docs/llm_augmentation/tables.py "$out"
echo "done: $out"
