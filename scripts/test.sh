#!/usr/bin/env bash
# The tests: set up, prepare the default model and the real editors, run every test
# (fast unit tests, end-to-end server tests, default-model tests, Neovim and VS Code).
# Pass pytest arguments to narrow it, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
speclsp models pull qwen2.5-coder-0.5b
for installer in scripts/install-neovim.sh scripts/install-vscode-test.sh; do
  if [ -f "$installer" ]; then bash "$installer"; fi
done
python -m pytest -ra "$@"
