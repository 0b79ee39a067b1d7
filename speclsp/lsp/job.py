"""Where a completion request points, as plain values: `locate` is pure.

`Session` answers a request in named steps (refuse, locate, from the cache, debounce and
start, wait or restart, answer); the first of them that needs the document's text is
`locate`, which turns the client's (line, character) into a `Cursor`: the code-point
offset, the text before and after it, and the word being typed, in client units as the
answer needs them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .documents import Document
from .positions import from_codepoints


def word_before(line: str, col: int) -> str:
    """The identifier characters that end at `col` (linear in their length, however long the line)."""
    i = col
    while i > 0 and (line[i - 1].isalnum() or line[i - 1] == "_"):
        i -= 1
    return line[i:col]


@dataclass(frozen=True)
class Cursor:
    """A request's position in one version of a document."""

    offset: int  # code points from the start of the text
    prefix: str  # the text before the cursor
    suffix: str  # and after it
    line: int  # client units, as the request gave them
    character: int  # client units, clamped to the line's text
    word: str  # the identifier characters just before the cursor
    word_start: int  # client units: where that word starts on the line
    version: int

    def where(self) -> dict:
        """The answer's position fields (`session.Answer`)."""
        return dict(line=self.line, character=self.character, version=self.version, word=self.word,
                    word_start=self.word_start)


def locate(doc: Document, line: int, character: int, encoding: str) -> Cursor:
    """The cursor at (line, character) in client units; `line` must be within the document."""
    lines = doc.lines
    offset = lines.offset_from_client(line, character, encoding)
    line_text = lines.line(line)
    col = offset - lines.starts[line]
    word = word_before(line_text, col)
    return Cursor(offset, doc.text[:offset], doc.text[offset:], line, from_codepoints(line_text, col, encoding),
                  word, from_codepoints(line_text, col - len(word), encoding), doc.version)
