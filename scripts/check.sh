#!/usr/bin/env bash
# Before a commit: lint, formatting, types and the fast tests (under 3 minutes on 2 cores).
# `--static`: lint, formatting and types only (what scripts/test.sh runs before the suite).
# The whole suite, with the server end to end and the real editors, is scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/ruff ] || [ ! -x .venv/bin/mypy ]; then bash scripts/setup.sh; fi
. .venv/bin/activate
start=$SECONDS
echo "check: ruff check" >&2
ruff check .
echo "check: ruff format --check" >&2
ruff format --check .
echo "check: mypy (speclsp/)" >&2
mypy
if [ "${1:-}" != "--static" ]; then
  # tests/unit: in process, no server subprocess (the default model's tests are `slow`).
  echo "check: fast tests (tests/unit: index, trees, controller, engine, session rules, layers, remote backend)" >&2
  python -m pytest -q -m "not slow and not vllm and not editor" tests/unit "$@"
fi
echo "check: passed in $((SECONDS - start)) s" >&2
