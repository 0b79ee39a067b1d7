"""The open documents: text, version, folder and size cap, with edits in client units.

The store keeps its own copy of every open document (pygls' workspace is bypassed, see
`transport.py`), applies `didChange` content changes converted from the negotiated position
encoding to code points (`positions.py`), and decides which documents are too large to index
or complete (`Config.max_document_chars`). Folders are one `drafting.folders.Folders` list,
shared with the n-gram indexes. It knows nothing of lsprotocol or of the model.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ..drafting.folders import Folders
from .positions import UTF16, Lines, to_codepoints

log = logging.getLogger(__name__)

Range = tuple[int, int, int, int]  # start line, start units, end line, end units (client units)

# A didChange with more content changes than this is applied on a list of lines and reported
# as one whole-text edit (indexed once): each change applied to the whole text costs a copy
# of it and a new line table, so 20,000 one-character changes took minutes.
MANY_CHANGES = 16


# A lone UTF-16 surrogate (valid in JSON as "\ud800", impossible in UTF-8): the tokenizer
# cannot encode it, so one such character made every prompt that took a snippet of its
# document fail, in other documents too. Stored as U+FFFD, which has the same length in
# every position encoding (one UTF-16 unit, three UTF-8 bytes as the surrogate would be).
_SURROGATE = re.compile("[\ud800-\udfff]")


def brief(uri: str, limit: int = 200) -> str:
    """A URI as logged: whole up to `limit` characters, else its start and its length (a
    5 MB URI in every warning wrote 50 MB of log for ten messages)."""
    return uri if len(uri) <= limit else f"{uri[:limit]}... ({len(uri)} chars)"


def clean(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD (the same length in any encoding)."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    log.info("replaced %d lone UTF-16 surrogates by U+FFFD", len(_SURROGATE.findall(text)))
    return _SURROGATE.sub("\ufffd", text)


def _split(text: str) -> list[str]:
    """`text` as lines with their endings (LSP's: "\\n", "\\r\\n", lone "\\r"); the last line
    has none and may be empty."""
    starts = Lines(text).starts
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


def _body_len(line: str) -> int:
    """Length of a line without its ending."""
    if line.endswith("\r\n"):
        return len(line) - 2
    return len(line) - 1 if line.endswith(("\n", "\r")) else len(line)


def _apply_on_lines(text: str, changes: Sequence[tuple[Range | None, str]], encoding: str) -> str:
    """`changes` applied in order, each costing the lines it touches (and a list splice), not
    the whole text: the same result as applying them to the text one by one."""
    lines = _split(text)

    def point(line: int, units: int) -> tuple[int, int]:
        if line >= len(lines):
            return len(lines) - 1, _body_len(lines[-1])
        line = max(0, line)
        body = lines[line][: _body_len(lines[line])]
        return line, to_codepoints(body, units, encoding)

    for rng, new_text in changes:
        if rng is None:
            lines = _split(new_text)
            continue
        (sl, sc), (el, ec) = sorted((point(rng[0], rng[1]), point(rng[2], rng[3])))
        # The lines around the change too: a "\r" ending before it may join a "\n" it
        # inserts, and what it inserts may end where the next line starts.
        r0, r1 = max(0, sl - 1), min(len(lines), el + 2)
        region = "".join(lines[r0:r1])
        s_off = sum(len(x) for x in lines[r0:sl]) + sc
        e_off = sum(len(x) for x in lines[r0:el]) + ec
        new_lines = _split(region[:s_off] + new_text + region[e_off:])
        if r1 < len(lines):  # the region ends with a line ending: no partial last line
            new_lines.pop()
        lines[r0:r1] = new_lines
    return "".join(lines)


@dataclass
class Document:
    uri: str
    path: str
    language_id: str
    version: int
    text: str
    folder: str | None  # the workspace folder holding it (longest prefix), None if none
    edited_at: float = field(default_factory=time.monotonic)
    too_large: bool = False  # over Config.max_document_chars: in sync, not indexed or completed
    edits: int = 0  # didChange notifications applied: tells edits apart when a client reuses a version
    _lines: Lines | None = None

    @property
    def lines(self) -> Lines:
        if self._lines is None or self._lines.text is not self.text:
            self._lines = Lines(self.text)
        return self._lines


@dataclass(frozen=True)
class Edit:
    """One applied change, in code points of the text before it, and the text after it."""

    start: int
    end: int
    text: str
    after: str
    removed: str = ""  # what a ranged change replaced ("" for a whole-text replacement)


class DocumentStore:
    """Open documents by URI, the position encoding, the folders and the size cap."""

    def __init__(self, folders: Folders | None = None, max_chars: int = 1_000_000) -> None:
        self.folders = folders if folders is not None else Folders()
        self.encoding = UTF16
        self.max_chars = max_chars
        self.many_changes = MANY_CHANGES
        self._docs: dict[str, Document] = {}

    def get(self, uri: str) -> Document | None:
        return self._docs.get(uri)

    def __contains__(self, uri: str) -> bool:
        return uri in self._docs

    def __len__(self) -> int:
        return len(self._docs)

    def __iter__(self) -> Iterator[Document]:
        return iter(list(self._docs.values()))

    def open(self, uri: str, path: str, language_id: str, version: int, text: str) -> Document:
        text = clean(text)
        doc = Document(uri, path, language_id, version, text, self.folders.folder_for(uri))
        doc.too_large = len(text) > self.max_chars
        if doc.too_large:
            log.info(
                "%s has %d characters, over maxDocumentChars %d: kept in sync, not indexed or completed",
                brief(uri),
                len(text),
                self.max_chars,
            )
        self._docs[uri] = doc
        return doc

    def close(self, uri: str) -> Document | None:
        return self._docs.pop(uri, None)

    def change(self, doc: Document, version: int, changes: Sequence[tuple[Range | None, str]]) -> list[Edit]:
        """Apply content changes ((range in client units, or None for the whole text), text)
        in order; returns them as code-point edits. More than MANY_CHANGES are applied on
        lines (linear overall) and returned as one edit of the whole text."""
        edits = []
        changes = [(rng, clean(new_text)) for rng, new_text in changes]
        if len(changes) > self.many_changes:
            old = doc.text
            doc.text = _apply_on_lines(old, changes, self.encoding)
            edits.append(Edit(0, len(old), doc.text, doc.text))
            changes = ()
        for rng, new_text in changes:
            if rng is None:
                start, end = 0, len(doc.text)
            else:
                lines = doc.lines
                start = lines.offset_from_client(rng[0], rng[1], self.encoding)
                end = lines.offset_from_client(rng[2], rng[3], self.encoding)
                start, end = min(start, end), max(start, end)
            removed = doc.text[start:end] if rng is not None else ""
            doc.text = doc.text[:start] + new_text + doc.text[end:]
            edits.append(Edit(start, end, new_text, doc.text, removed))
        doc.version = version
        doc.edits += 1
        doc.edited_at = time.monotonic()
        return edits

    def resize(self, doc: Document) -> bool | None:
        """After an edit or a new cap: True if `doc` just became too large, False if it just
        fits again, None if nothing changed."""
        too_large = len(doc.text) > self.max_chars
        if too_large == doc.too_large:
            return None
        doc.too_large = too_large
        if too_large:
            log.info(
                "%s grew to %d characters, over maxDocumentChars %d: no longer indexed or completed",
                brief(doc.uri),
                len(doc.text),
                self.max_chars,
            )
        else:
            log.info("%s is down to %d characters: indexed and completed again", brief(doc.uri), len(doc.text))
        return too_large

    def folders_changed(self) -> None:
        for doc in self._docs.values():
            doc.folder = self.folders.folder_for(doc.uri)

    def others(self, doc: Document) -> list[Document]:
        """The other documents of `doc`'s folder that may give prompt context, most recently
        edited first."""
        return sorted(
            (d for d in self._docs.values() if d is not doc and d.folder == doc.folder and not d.too_large),
            key=lambda d: -d.edited_at,
        )
