"""Render a terminal screen captured with `tmux capture-pane -e -p` to a PNG.

    python ansi2png.py capture.ansi out.png [--cursor ROW,COL]

Handles what tmux emits: SGR colours (16, 256, RGB), bold, italic, reverse. Needs Pillow and
the DejaVu Sans Mono font (Debian fonts-dejavu-core).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
BASE16 = [
    (0x1D, 0x1F, 0x21),
    (0xCC, 0x66, 0x66),
    (0xB5, 0xBD, 0x68),
    (0xF0, 0xC6, 0x74),
    (0x81, 0xA2, 0xBE),
    (0xB2, 0x94, 0xBB),
    (0x8A, 0xBE, 0xB7),
    (0xC5, 0xC8, 0xC6),
    (0x66, 0x66, 0x66),
    (0xD5, 0x4E, 0x53),
    (0xB9, 0xCA, 0x4A),
    (0xE7, 0xC5, 0x47),
    (0x7A, 0xA6, 0xDA),
    (0xC3, 0x97, 0xD8),
    (0x70, 0xC0, 0xB1),
    (0xEA, 0xEA, 0xEA),
]
FG, BG = (0xE0, 0xE2, 0xEA), (0x14, 0x16, 0x1B)


def xterm256(n: int) -> tuple[int, int, int]:
    if n < 16:
        return BASE16[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return steps[n // 36], steps[(n // 6) % 6], steps[n % 6]
    v = 8 + 10 * (n - 232)
    return v, v, v


def parse(text: str):
    """Rows of cells: (char, fg, bg, bold, italic)."""
    rows = []
    fg, bg, bold, italic, reverse = None, None, False, False, False
    for line in text.split("\n"):
        cells = []
        for token in re.split(r"(\x1b\[[0-9;:]*m)", line):
            if token.startswith("\x1b["):
                codes = [int(c) if c else 0 for c in re.split("[;:]", token[2:-1])] or [0]
                i = 0
                while i < len(codes):
                    c = codes[i]
                    if c == 0:
                        fg, bg, bold, italic, reverse = None, None, False, False, False
                    elif c == 1:
                        bold = True
                    elif c == 3:
                        italic = True
                    elif c == 7:
                        reverse = True
                    elif c == 22:
                        bold = False
                    elif c == 23:
                        italic = False
                    elif c == 27:
                        reverse = False
                    elif 30 <= c <= 37:
                        fg = BASE16[c - 30]
                    elif 90 <= c <= 97:
                        fg = BASE16[c - 90 + 8]
                    elif 40 <= c <= 47:
                        bg = BASE16[c - 40]
                    elif 100 <= c <= 107:
                        bg = BASE16[c - 100 + 8]
                    elif c == 39:
                        fg = None
                    elif c == 49:
                        bg = None
                    elif c in (38, 48) and i + 1 < len(codes):
                        if codes[i + 1] == 5 and i + 2 < len(codes):
                            col = xterm256(codes[i + 2])
                            i += 2
                        elif codes[i + 1] == 2 and i + 4 < len(codes):
                            col = tuple(codes[i + 2 : i + 5])
                            i += 4
                        else:
                            col = None
                        if c == 38:
                            fg = col
                        else:
                            bg = col
                    i += 1
                continue
            for ch in token:
                f, b = fg or FG, bg or BG
                if reverse:
                    f, b = b, f
                cells.append((ch, f, b, bold, italic))
        rows.append(cells)
    while rows and not rows[-1]:
        rows.pop()
    return rows


def render(rows, out: Path, cursor: tuple[int, int] | None, size: int = 16) -> None:
    fonts = {
        (False, False): ImageFont.truetype(str(FONT_DIR / "DejaVuSansMono.ttf"), size),
        (True, False): ImageFont.truetype(str(FONT_DIR / "DejaVuSansMono-Bold.ttf"), size),
        (False, True): ImageFont.truetype(str(FONT_DIR / "DejaVuSansMono-Oblique.ttf"), size),
        (True, True): ImageFont.truetype(str(FONT_DIR / "DejaVuSansMono-BoldOblique.ttf"), size),
    }
    cw = round(fonts[(False, False)].getlength("M"))
    ch = round(size * 1.35)
    width = max(len(r) for r in rows)
    pad = 12
    img = Image.new("RGB", (width * cw + 2 * pad, len(rows) * ch + 2 * pad), BG)
    draw = ImageDraw.Draw(img)
    for y, row in enumerate(rows):
        for x, (c, f, b, bold, italic) in enumerate(row):
            x0, y0 = pad + x * cw, pad + y * ch
            if b != BG:
                draw.rectangle([x0, y0, x0 + cw, y0 + ch], fill=b)
            if cursor == (y, x):
                draw.rectangle([x0, y0 + 1, x0 + 1, y0 + ch - 2], fill=FG)
            if c != " ":
                draw.text((x0, y0 + (ch - size) // 2 - 1), c, font=fonts[(bold, italic)], fill=f)
    img.save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("out")
    ap.add_argument("--cursor", help="ROW,COL (0-based) to draw an insert-mode bar cursor")
    args = ap.parse_args()
    cursor = tuple(int(v) for v in args.cursor.split(",")) if args.cursor else None
    render(parse(Path(args.capture).read_text(encoding="utf-8", errors="replace")), Path(args.out), cursor)


if __name__ == "__main__":
    main()
