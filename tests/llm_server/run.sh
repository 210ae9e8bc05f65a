#!/usr/bin/env bash
# The real-server test: llama.cpp's OpenAI-compatible server (tests/llm_server/serve.py) on 127.0.0.1 with
# SmolLM2-135M-Instruct, then ts.llm_client (real_server.lua) and recipes/augment_llm.lua against it, each run twice
# on one cache: the second pays nothing and writes the same file.
#   tests/llm_server/run.sh TWOSTAGE_BINARY
# Exits 77 (CTest: skipped), saying why, only when the server's Python cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
twostage=$1
python=.cache/llm-server/bin/python
if ! tests/llm_server/install.sh >/tmp/twostage-llm-server-install.log 2>&1; then
  echo "SKIPPED: llama.cpp's server could not be installed from PyPI ($(tail -n 1 /tmp/twostage-llm-server-install.log))"
  exit 77
fi
work=$(mktemp -d /tmp/twostage-llm-server.XXXXXX)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
started=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - started) / 100000000 ))" | sed 's/.$/.&/; s/^\./0./'; }
"$python" tests/llm_server/serve.py "$work/address" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 600); do
  [ -s "$work/address" ] && break
  kill -0 "$server_pid" 2>/dev/null || { tail -n 20 "$work/server.log"; echo "FAILED: the server stopped"; exit 1; }
  sleep 0.1
done
[ -s "$work/address" ] || { tail -n 20 "$work/server.log"; echo "FAILED: the server did not start in 60 s"; exit 1; }
base_url=$(cat "$work/address")
echo "server: $base_url ($(elapsed) s to start)"

"$twostage" run tests/llm_server/real_server.lua --out "$work/client" --set base_url="$base_url" --set slots=2 \
  --quiet

# The recipe, twice on one run folder (and so one cache), with several paraphrases per request and a seed.
augment() {
  "$twostage" run recipes/augment_llm.lua --out "$work/augment" --quiet --set base_url="$base_url" \
    --set api_key_env= --set model=smollm2 --set ratio=1 --set limit=8 --set target=3 --set max_tokens=48 \
    --set per_request=2 --set request_seed=7 --set concurrency=2 --set allow_short=true \
    --set price_prompt=0.5 --set price_completion=1.5
}
augment
cp "$work/augment/aug.csv" "$work/first.csv"
cp "$work/augment/summary.json" "$work/first.json"
augment
python3 - "$work/first.json" "$work/augment/summary.json" <<'PY'
import json, sys
first, second = (json.load(open(path)) for path in sys.argv[1:3])
def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}\nfirst: {json.dumps(first)}\nsecond: {json.dumps(second)}")
llm = first["llm"]
check(llm["requests_sent"] > 0 and llm["tokens"]["prompt"] > 0, "the first run asked the server and paid tokens")
check(first["rows_written"] > 0 and first["accepted"] > 0, "the first run wrote paraphrases")
check(llm["per_request"] == 2 and llm["tokens_per_accepted"]["total"] > 0 and llm["cost_per_accepted"] > 0,
      "tokens and cost per accepted paraphrase are reported")
check(second["llm"]["requests_sent"] == 0 and second["llm"]["tokens"]["total"] == 0, "the re-run paid nothing")
check(second["llm"]["cache_hits"] == first["requests"], "the re-run took every reply from the cache")
check(second["llm"]["tokens_used"] == llm["tokens_used"], "the re-run used the same replies")
print("augment_llm: {} requests, {} accepted, {} written; rejected {}; {:.1f} tokens per accepted paraphrase"
      .format(first["requests"], first["accepted"], first["rows_written"],
              {k: v for k, v in first["rejections"].items() if v}, llm["tokens_per_accepted"]["total"]))
PY
cmp "$work/first.csv" "$work/augment/aug.csv" || { echo "FAILED: the re-run wrote another aug.csv"; exit 1; }
echo "real server test: $(elapsed) s"
