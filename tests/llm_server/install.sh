#!/usr/bin/env bash
# The Python of the real-server test: a virtual environment in .cache/llm-server with requirements.txt (about
# 130 MB from PyPI). Idempotent and quiet when already there; setup.sh's test mode runs it. Exits non-zero when PyPI
# cannot be reached, and the test then says it is skipped and why.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.cache/llm-server
requirements=tests/llm_server/requirements.txt
stamp=$venv/installed-requirements.txt
if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$stamp" 2>/dev/null; then exit 0; fi
echo "setup: llama.cpp's server for tests/llm_server in $venv ($(grep -v '^#' "$requirements" | tr '\n' ' '))"
/usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$requirements"
"$venv/bin/python" -c 'import xllamacpp'
cp "$requirements" "$stamp"
