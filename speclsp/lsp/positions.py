"""Columns in the three LSP position encodings, and documents as lines.

LSP counts a position's `character` in UTF-16 code units by default, or in UTF-8 bytes or
UTF-32 code points when the client and server agree on it in `initialize`. Python strings
index code points, which is what everything behind the server (CompletionRequest,
context.split_at) uses. These functions convert one line's column between the two; they
know nothing of lsprotocol.

Lines end as LSP says: at "\\n", at "\\r\\n" (one ending) and at a lone "\\r". A line's text
(`Lines.line`) excludes its ending, so a column never lands inside one.
"""

from __future__ import annotations

import re
from bisect import bisect_right

import numpy as np

_EOL = re.compile(r"\r\n?|\n")

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"
ENCODINGS = (UTF16, UTF8, UTF32)


def _units(ch: str, encoding: str) -> int:
    cp = ord(ch)
    if encoding == UTF16:
        return 2 if cp > 0xFFFF else 1
    if encoding == UTF8:
        return 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4
    return 1


def to_codepoints(line: str, units: int, encoding: str = UTF16) -> int:
    """The code-point column of `units` client units into `line` (clamped to the line).

    A column inside a multi-unit character rounds down to that character's start.
    """
    if encoding == UTF32 or line.isascii():
        return max(0, min(units, len(line)))
    used = 0
    for i, ch in enumerate(line):
        used += _units(ch, encoding)
        if used > units:
            return i
    return len(line)


def from_codepoints(line: str, column: int, encoding: str = UTF16) -> int:
    """The client units of the first `column` code points of `line`."""
    column = max(0, min(column, len(line)))
    if encoding == UTF32 or line.isascii():
        return column
    return sum(_units(ch, encoding) for ch in line[:column])


def line_starts(text: str) -> list[int]:
    """Offsets where lines start: after each "\n", "\r\n" or lone "\r" (LSP's line endings).

    Rebuilt on the event loop at every edit, so it is found in bulk (passes in C over the
    code points) rather than by a loop over the lines, which cost milliseconds a keystroke in a
    1M-character document (figures: docs/reliability.md)."""
    if len(text) < 4096:  # a regular expression is quicker than the set-up below
        return [0, *(m.end() for m in _EOL.finditer(text))]
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    ends = points == 10
    if "\r" in text:
        lone_cr = points == 13
        lone_cr[:-1] &= points[1:] != 10
        ends |= lone_cr
    return [0, *(np.flatnonzero(ends) + 1).tolist()]


class Lines:
    """Line starts of a text, for offset <-> (line, column) in code points."""

    def __init__(self, text: str):
        self.text = text
        self.starts = line_starts(text)

    def __len__(self) -> int:
        return len(self.starts)

    def end(self, n: int) -> int:
        """Offset of the end of line `n`'s text (where its line ending starts)."""
        if n + 1 >= len(self.starts):
            return len(self.text)
        end = self.starts[n + 1] - 1  # the ending's last character: "\n" or a lone "\r"
        if self.text[end] == "\n" and end > self.starts[n] and self.text[end - 1] == "\r":
            end -= 1  # "\r\n"
        return end

    def line(self, n: int) -> str:
        if n < 0 or n >= len(self.starts):
            return ""
        return self.text[self.starts[n] : self.end(n)]

    def offset(self, line: int, column: int) -> int:
        """Code-point offset of (line, column); past the end clamps to the end."""
        if line >= len(self.starts):
            return len(self.text)
        line = max(0, line)
        return self.starts[line] + max(0, min(column, self.end(line) - self.starts[line]))

    def position(self, offset: int) -> tuple[int, int]:
        offset = max(0, min(offset, len(self.text)))
        line = bisect_right(self.starts, offset) - 1
        return line, offset - self.starts[line]

    def offset_from_client(self, line: int, units: int, encoding: str) -> int:
        return self.offset(line, to_codepoints(self.line(line), units, encoding))

    def client_position(self, offset: int, encoding: str) -> tuple[int, int]:
        line, col = self.position(offset)
        return line, from_codepoints(self.line(line), col, encoding)
