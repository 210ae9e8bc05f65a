#!/usr/bin/env bash
# The Python of the live parity tests: a virtual environment in .cache/python on Debian's python3-torch and
# python3-pandas (lighter than PyPI's torch wheel, which brings CUDA), with the pinned transformers of
# requirements.txt. Idempotent and quiet when already there; setup.sh's test mode runs it.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.cache/python
requirements=tests/parity/requirements.txt
stamp=$venv/installed-requirements.txt
if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$stamp" 2>/dev/null; then exit 0; fi
echo "setup: Python for the parity tests in $venv ($(grep -v '^#' "$requirements" | tr '\n' ' '))"
/usr/bin/python3 -m venv --system-site-packages "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
"$venv/bin/python" -c 'import transformers, torch, pandas'
cp "$requirements" "$stamp"
