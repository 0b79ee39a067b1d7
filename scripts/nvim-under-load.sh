#!/usr/bin/env bash
# The Neovim end-to-end tests N times in a row (default 10) while two CPU-bound processes
# run beside them: a check that they do not depend on a quiet machine. Needs
# scripts/setup.sh and scripts/install-neovim.sh (or SPECLSP_NVIM_012 / SPECLSP_NVIM_011).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
python3 -c "while True: pass" & b1=$!
python3 -c "while True: pass" & b2=$!
trap 'kill $b1 $b2 2>/dev/null || true' EXIT
for i in $(seq 1 "$runs"); do
  .venv/bin/python -m pytest -p no:cacheprovider tests/editors/test_neovim.py -q 2>&1 | tail -1 | sed "s/^/run $i: /"
done
