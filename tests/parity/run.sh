#!/usr/bin/env bash
# CTest's entry to tests/parity/parity.py: PYTHON (./setup.sh test makes .cache/python, with the pinned
# transformers of tests/parity/requirements.txt) runs one parity test against BINARY in a scratch folder.
# Fails when PYTHON cannot import transformers, unless TWOSTAGE_SKIP_PYTHON=1, which makes it exit 77: skipped.
#   tests/parity/run.sh PYTHON BINARY TEST [--loss ...] [--optimizer ...] [--mismatch]
set -euo pipefail
python=$1 binary=$2
shift 2
if ! "$python" -c 'import transformers, torch, pandas' 2>/dev/null; then
  if [ "${TWOSTAGE_SKIP_PYTHON:-0}" = 1 ]; then echo "skipped: $python cannot import transformers"; exit 77; fi
  echo "$python cannot import transformers, torch and pandas: run ./setup.sh test (or set TWOSTAGE_SKIP_PYTHON=1)"
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
exec "$python" "$(dirname "$0")/parity.py" "$binary" "$work/parity" "$@"
