#!/usr/bin/env bash
# An editor's end-to-end tests N times in a row (default 10) while two CPU-bound processes
# run beside them: a check that they do not depend on a quiet machine.
#
#   scripts/editors-under-load.sh neovim|vscode [N]
#
# Needs scripts/setup.sh and scripts/install-neovim.sh (neovim) or
# scripts/install-vscode-test.sh (vscode). Prints one pytest summary line per run and the
# count of runs that passed; each run's output goes to artifacts/under-load/ (and, for a
# failed VS Code run, what its driver left in artifacts/vscode-e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  neovim) tests=tests/editors/test_neovim.py ;;
  vscode) tests=tests/editors/test_vscode_e2e.py ;;  # the trained model's checks (not the slow default-model one)
  *) echo "usage: $0 neovim|vscode [N]" >&2; exit 2 ;;
esac
runs="${2:-10}"
python3 -c "while True: pass" & b1=$!
python3 -c "while True: pass" & b2=$!
trap 'kill $b1 $b2 2>/dev/null || true' EXIT
out=artifacts/under-load
mkdir -p "$out"
passed=0
for i in $(seq 1 "$runs"); do
  log="$out/$1-run-$i.log"
  .venv/bin/python -m pytest -p no:cacheprovider -m "not slow" "$tests" -q -rf >"$log" 2>&1 || true
  line=$(tail -1 "$log")
  if [[ "$line" == *passed* && "$line" != *failed* && "$line" != *error* ]]; then
    passed=$((passed + 1))
  elif [[ "$1" == vscode && -d artifacts/vscode-e2e ]]; then
    rm -rf "$out/vscode-run-$i" && cp -r artifacts/vscode-e2e "$out/vscode-run-$i"  # what the failed run left
  fi
  echo "run $i: $line"
done
echo "$passed/$runs runs passed ($tests, two CPU-bound processes beside them; logs in $out)"
