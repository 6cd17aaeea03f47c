#!/usr/bin/env bash
# Creates .venv from requirements.lock (exact pins, compiled by uv) and installs kiln editable.
# Re-running is cheap: it only acts when requirements.lock or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.kiln-stamp
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [[ -f $stamp && $(cat $stamp) == "$want" ]]; then exit 0; fi
[[ -x .venv/bin/python ]] || python3.11 -m venv .venv
[[ -x .venv/bin/uv ]] || .venv/bin/pip install -q uv==0.13.8
echo "==> installing pinned Python packages into .venv (torch is large; cached afterwards)"
.venv/bin/uv pip install -p .venv/bin/python -r requirements.lock
.venv/bin/uv pip install -p .venv/bin/python --no-deps -e .
echo "$want" > $stamp
