#!/usr/bin/env bash
# Set up a fresh machine for speclsp: a virtual environment in .venv with speclsp installed
# (editable) plus its test, benchmark and dev (lint, types) extras. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
echo "setup: installing speclsp and its dependencies (torch pinned by scripts/constraints.txt)" >&2
python -m pip install -q -c scripts/constraints.txt -e ".[test,bench,dev]"
