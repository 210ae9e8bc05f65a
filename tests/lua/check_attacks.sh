#!/usr/bin/env bash
# Runs every attack of tests/lua/fixtures/attacks against BINARY (default: build/twostage) and prints what each
# achieved, so that a build before and after a sandbox change can be compared:
#   tests/lua/check_attacks.sh /path/to/old/twostage
set -u
cd "$(dirname "$0")/../.."
binary=$(realpath "${1:-build/twostage}")
attacks=tests/lua/fixtures/attacks
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
secret="the user's secret line"
export OPENAI_API_KEY=sk-sandbox-check-key

# A capture server for the endpoint attack: python3's http.server logs each request with its Authorization header.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 - "$port" > "$scratch/captured.txt" 2>&1 <<'PY' &
import http.server, sys
class Capture(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        print("captured", self.headers.get("Authorization"), body, flush=True)
        self.send_response(500); self.end_headers()
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Capture).serve_forever()
PY
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$scratch"' EXIT
sleep 0.5

report() {  # name, exit status, run folder parent
  local name=$1 status=$2 root=$3 what=""
  [ -e "$root/escaped.txt" ] && what+=" wrote outside its run folder;"
  if grep -q -e "$secret" -e "$OPENAI_API_KEY" "$root/run/stolen.txt" 2>/dev/null; then
    what+=" stole the secret or the key;"
  elif [ -s "$root/run/stolen.txt" ]; then
    what+=" wrote: $(head -c 70 "$root/run/stolen.txt" | tr '\n' ' ');"
  fi
  [ "$status" -ge 128 ] && what+=" crashed (signal $((status - 128)));"
  printf '%-46s exit %3d:%s\n' "$name" "$status" "${what:- stopped}"
}

attack() {  # name, recipe, extra arguments...
  local name=$1 recipe=$2; shift 2
  local root="$scratch/$name"
  mkdir -p "$root"; echo "$secret" > "$root/secret.txt"
  "$binary" run "$attacks/$recipe" --quiet --out "$root/run" "$@" > "$root/output.txt" 2>&1
  report "$name" $? "$root"
}

attack write_after_rebinding_find write_after_rebinding_find.lua
attack write_after_rebinding_type write_after_rebinding_type.lua
attack write_after_setfenv write_after_setfenv.lua
attack call_gc_twice call_gc_twice.lua
attack read_api_key read_api_key.lua
for via in read_file io_open io_lines loadfile require; do
  attack "read_secret_file ($via)" read_secret_file.lua --set via=$via
done
attack send_to_own_server send_to_own_server.lua --set port="$port"
echo "  capture server: $(grep -c captured "$scratch/captured.txt") request(s)$(grep -q "$OPENAI_API_KEY" "$scratch/captured.txt" && echo ", with the API key")"
attack "require_bytecode" require_bytecode.lua
attack "require_bytecode (mutated)" require_bytecode.lua --set mutate=true
attack jit_util jit_util.lua
mkdir -p "$scratch/inputs/model"; echo '{"hidden_size": 8}' > "$scratch/inputs/model/config.json"
printf 'sentence\tlabel\nfine\t1\n' > "$scratch/inputs/train.tsv"
attack overwrite_inputs overwrite_inputs.lua --set model="$scratch/inputs/model" --set train="$scratch/inputs/train.tsv"
echo "  inputs: config.json $(cat "$scratch/inputs/model/config.json"), train.tsv $(wc -c < "$scratch/inputs/train.tsv") bytes"
rm -f /tmp/twostage-sweep-attack-escaped.txt
"$binary" sweep "$attacks/sweep_writes_anywhere.lua" --dry-run --out "$scratch/sweep" > "$scratch/sweep.txt" 2>&1
status=$?
printf '%-46s exit %3d: %s\n' "sweep_writes_anywhere (--dry-run)" "$status" \
  "$([ -e /tmp/twostage-sweep-attack-escaped.txt ] && echo "wrote outside" || echo "stopped")"
rm -f /tmp/twostage-sweep-attack-escaped.txt
