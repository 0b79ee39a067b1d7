#!/usr/bin/env bash
# The Neovim end-to-end tests N times in a row beside two CPU-bound processes (kept for its
# old name): scripts/editors-under-load.sh neovim [N].
exec "$(dirname "$0")/editors-under-load.sh" neovim "$@"
