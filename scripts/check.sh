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
  echo "check: fast tests (units: index, trees, controller, engine, session rules, layers)" >&2
  python -m pytest -q -m "not slow and not vllm and not editor" \
    tests/test_ngram.py tests/test_tree.py tests/test_controller.py tests/test_calibration.py \
    tests/test_session_rules.py tests/test_prompt_and_show.py tests/test_fim_families.py tests/test_layers.py \
    tests/test_server_units.py tests/test_engine.py tests/test_draft_model.py tests/test_replay.py "$@"
fi
echo "check: passed in $((SECONDS - start)) s" >&2
