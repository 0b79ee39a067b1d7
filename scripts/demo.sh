#!/usr/bin/env bash
# The main job: set up, fetch and convert the default model (once, cached), and complete a
# real code file with it, printing the completion and its statistics.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
speclsp models pull qwen2.5-coder-0.5b
speclsp demo "$@"
