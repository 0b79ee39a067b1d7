"""Tokenized documents: text and token ids kept in step, edited locally.

Every document is kept as its text and its token ids (the model's own tokenizer). A
keystroke must cost well under a millisecond on a 5,000-line file, so nothing here may be
proportional to the document:

- Tokens live in chunks (~64 tokens) linked in order; every token carries a uid that never
  changes while the token exists (the n-gram postings in `index.py` name uids, not
  positions, so an insertion shifts nothing else). uid -> chunk is a dict kept by the index;
  the offset inside a chunk is a short `list.index`.
- An edit re-tokenizes a window of whole lines around it (at least one line with non-blank
  text on each side), starting and ending on old *clean* token boundaries (after a token of
  positive length, so never inside a multi-byte character). The window's tokens must agree
  with the old tokens at both ends (same id, same length), the point where the new
  tokenization re-synchronises with the old one; otherwise the window is widened (x4 lines)
  and tried again, up to the whole document (`retokenize`). Only the differing middle is
  spliced in (`trim`, `replace_tokens`). Regex-pre-tokenized BPE (GPT-2/Qwen/Llama-3 style)
  never carries a token across such a synchronised boundary, so the result equals a full
  re-tokenization; a property test checks this against the real tokenizers.
- Id-only documents (the prompt, generated tokens, accepted completions) are plain
  append-only lists; their uids encode (slot, position).

This file is one concern (documents as tokens, kept in step with their text) at ~420 lines.
"""

from __future__ import annotations

import itertools
import sys
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any, TypeVar

CHUNK_TARGET = 64  # tokens per chunk after a split
CHUNK_MAX = 128  # a chunk longer than this is split
STATIC = 1 << 62  # uid flag for id-only documents (prompt, generated, history)
SLOT_SHIFT = 24  # id-only uids: STATIC | slot << 24 | position
POS_MASK = (1 << SLOT_SHIFT) - 1
SLOT_MASK = (1 << (62 - SLOT_SHIFT)) - 1


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# --- tokenizer adapter -----------------------------------------------------------------

TokenizeFn = Callable[[str], "tuple[list[int], list[int] | None]"]
"""text -> (token ids, char length of each token) ; lengths None if the tokenizer has no offsets."""


def lengths_from_offsets(text_len: int, offsets: Sequence[Sequence[int]]) -> list[int]:
    """Char length of each token from (start, end) offsets; tokens splitting a char get 0.

    A token boundary is "clean" (a valid place to cut and re-tokenize) only after a token
    of positive length.
    """
    n = len(offsets)
    if n == 0:
        return []
    starts = [0] * n
    prev = 0
    for i in range(1, n):
        s = offsets[i][0]
        prev = s if s > prev else prev
        starts[i] = min(prev, text_len)
    lens = [starts[i + 1] - starts[i] for i in range(n - 1)]
    lens.append(text_len - starts[-1])
    return lens


PIECE_CHARS = 32_768


def split_at_lines(text: str, size: int) -> list[str]:
    """`text` in pieces of about `size` characters, each cut just after a line ending that
    a non-space character follows: a boundary of BPE pre-tokenizers (GPT-2's, Qwen's), so
    the pieces tokenize as the whole would (with a SentencePiece tokenizer a piece's first
    token may differ: drafting only loses a match there). A text with no such line ending
    in reach stays whole up to the next."""
    pieces, start = [], 0
    while len(text) - start > size:
        cut = start + size
        while cut < len(text) and not (text[cut - 1] == "\n" and not text[cut].isspace()):
            cut = text.find("\n", cut) + 1 or len(text)
        pieces.append(text[start:cut])
        start = cut
    if start < len(text) or not pieces:
        pieces.append(text[start:])
    return pieces


T = TypeVar("T")
SHARED_TOKENIZERS = 4  # tokenizers kept for reuse, the most recently loaded
_shared: OrderedDict[tuple[str, str, int, int], Any] = OrderedDict()
_shared_lock = threading.Lock()


def shared_tokenizer(source: Path | None, load: Callable[[], T], kind: str) -> T:
    """The tokenizer `load()` makes from the file `source`, loaded once while the file is
    unchanged: a reload of the same model gets the same tokenizer back.

    Every tokenizer (`tokenizers.Tokenizer`, and a transformers fast tokenizer, which wraps
    one) that has encoded text leaves its BPE cache behind in native memory when it is
    dropped, in proportion to the words it saw (turning the cache off avoids that but makes
    encoding slower). A server that made a new one per reload grew at every switch of
    backend (docs/reliability.md, the long soak). Tokenizers are safe to share between
    threads, and nothing here changes one after it is loaded.
    `source` None (a hub id, no file to key on): loaded every time."""
    if source is None or not source.is_file():
        return load()
    st = source.stat()
    key = (kind, str(source.absolute()), st.st_size, st.st_mtime_ns)  # a link stays its own: its folder may differ
    with _shared_lock:
        got = _shared.get(key)
        if got is None:
            got = _shared[key] = load()
            while len(_shared) > SHARED_TOKENIZERS:
                _shared.popitem(last=False)
        _shared.move_to_end(key)
        return got


def make_tokenize(tokenizer: Any) -> TokenizeFn:
    """Adapt a tokenizer to `TokenizeFn`.

    Accepts a transformers fast tokenizer (uses its `backend_tokenizer`, no special tokens),
    a `tokenizers.Tokenizer`, a callable already of this shape, or anything with
    `encode(text) -> list[int]` (then without offsets: every edit re-tokenizes the whole
    document, still with an incremental index update).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None and hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "get_vocab_size"):
        backend = tokenizer  # a tokenizers.Tokenizer
    if backend is not None:

        def tokenize(text: str) -> tuple[list[int], list[int] | None]:
            # encode_batch releases the GIL while it runs (encode holds it for the whole
            # text, during which the server's event loop could not run). Long texts
            # come in pieces (NgramIndex.open), so turning its result into lists is short too.
            enc = backend.encode_batch([text], add_special_tokens=False)[0]
            return enc.ids, lengths_from_offsets(len(text), enc.offsets)

        return tokenize
    if hasattr(tokenizer, "encode"):

        def tokenize_plain(text: str) -> tuple[list[int], list[int] | None]:
            return list(tokenizer.encode(text)), None

        return tokenize_plain
    if callable(tokenizer):
        return tokenizer
    raise TypeError(f"cannot tokenize with {type(tokenizer).__name__}: need encode(text) or a fast tokenizer")


# --- documents --------------------------------------------------------------------------


_CHUNK_IDS = itertools.count()


class Chunk:
    """A run of consecutive tokens of one text document."""

    __slots__ = ("ids", "lens", "uids", "nchars", "prev", "next", "doc", "cid")

    def __init__(self, ids: list[int], lens: list[int], uids: list[int], doc: TextDoc):
        self.ids, self.lens, self.uids, self.doc = ids, lens, uids, doc
        self.nchars = sum(lens)
        self.prev: Chunk | None = None
        self.next: Chunk | None = None
        self.cid = next(_CHUNK_IDS)


class ChunkMap:
    """Each text token's chunk, by uid. The map of uids (one entry per token) holds chunk ids,
    ints, so the garbage collector never tracks it; only the map of chunks (one entry per
    ~64 tokens) holds objects. A dict uid -> Chunk of a full index was walked whole by every
    full collection, holding the GIL while the event loop waited."""

    __slots__ = ("_cid", "_chunks")

    def __init__(self) -> None:
        self._cid: dict[int, int] = {}
        self._chunks: dict[int, Chunk] = {}

    def __getitem__(self, uid: int) -> Chunk:
        return self._chunks[self._cid[uid]]

    def __len__(self) -> int:
        return len(self._cid)

    def put(self, chunk: Chunk) -> None:
        """`chunk` holds its uids (new ones, or moved from chunks it replaces)."""
        self._chunks[chunk.cid] = chunk
        cid = chunk.cid
        for u in chunk.uids:
            self._cid[u] = cid

    def drop_uids(self, uids: Iterable[int]) -> None:
        for u in uids:
            del self._cid[u]

    def drop_chunk(self, chunk: Chunk) -> None:
        self._chunks.pop(chunk.cid, None)

    def nbytes(self) -> int:
        return sys.getsizeof(self._cid) + sys.getsizeof(self._chunks)


class TextDoc:
    """A document with text: tokens in linked chunks so edits stay local.

    `sizes` and `nchars` (tokens and characters per chunk) run parallel to `chunks`; their
    running sums are rebuilt lazily (in C, `accumulate`) after an edit, so finding a token
    or a character is a bisect, not a walk.
    """

    def __init__(self, uri: str, text: str, source: str, stamp: int):
        self.uri, self.text, self.source, self.stamp = uri, text, source, stamp
        self.chunks: list[Chunk] = []
        self.sizes: list[int] = []
        self.nchars: list[int] = []
        self.ntokens = 0
        self.has_lens = True
        self._tok0: list[int] | None = None  # first token index of each chunk, + total
        self._char0: list[int] | None = None  # first char of each chunk, + total

    def changed(self) -> None:
        self._tok0 = self._char0 = None

    def tok0(self) -> list[int]:
        if self._tok0 is None:
            self._tok0 = list(accumulate(self.sizes, initial=0))
        return self._tok0

    def char0(self) -> list[int]:
        if self._char0 is None:
            self._char0 = list(accumulate(self.nchars, initial=0))
        return self._char0

    def locate(self, i: int) -> tuple[int, int]:
        """Global token index -> (chunk index, offset); i == ntokens: end of the last chunk."""
        if not self.chunks:
            return 0, 0
        if i >= self.ntokens:
            return len(self.chunks) - 1, self.sizes[-1]
        ci = bisect_right(self.tok0(), i) - 1
        return ci, i - self._tok0[ci]  # type: ignore[index]

    def slice(self, i: int, j: int) -> tuple[list[int], list[int], list[int]]:
        """ids, lens, uids of tokens [i, j)."""
        ids: list[int] = []
        lens: list[int] = []
        uids: list[int] = []
        j = min(j, self.ntokens)
        if j <= i:
            return ids, lens, uids
        ci, off = self.locate(i)
        need = j - i
        chunks = self.chunks
        while need > 0:
            c = chunks[ci]
            b = min(len(c.ids), off + need)
            ids += c.ids[off:b]
            lens += c.lens[off:b]
            uids += c.uids[off:b]
            need -= b - off
            ci, off = ci + 1, 0
        return ids, lens, uids

    def token_at_char(self, x: int) -> tuple[int, int]:
        """(index, start char) of the token containing char x (x == len(text): ntokens)."""
        c0 = self.char0()
        if x >= c0[-1]:
            return self.ntokens, len(self.text)
        ci = bisect_right(c0, x) - 1
        while self.nchars[ci] == 0:  # an all-zero-length chunk holds no char
            ci += 1
        pos = c0[ci]
        ti = self.tok0()[ci]
        for ln in self.chunks[ci].lens:
            if pos + ln > x:
                return ti, pos
            pos += ln
            ti += 1
        return ti, pos

    def all_ids(self) -> list[int]:
        out: list[int] = []
        for c in self.chunks:
            out += c.ids
        return out


class IdsDoc:
    """An append-only document of token ids only (prompt, generated tokens, history)."""

    def __init__(self, uri: str, source: str, stamp: int, slot: int):
        self.uri, self.source, self.stamp, self.slot = uri, source, stamp, slot
        self.ids: list[int] = []
        self.base = STATIC | (slot << SLOT_SHIFT)
        self.suffix_span = (0, 0)  # positions labelled "suffix" (the FIM suffix of a prompt)

    @property
    def ntokens(self) -> int:
        return len(self.ids)


def is_tokenize_fn(obj: Any) -> bool:
    return callable(obj) and not hasattr(obj, "encode") and not hasattr(obj, "backend_tokenizer")


def trim(
    old_ids: list[int], old_lens: list[int], ids: list[int], lens: list[int], ti: int, tj: int
) -> tuple[int, int, list[int], list[int]]:
    """Drop the common prefix and suffix of old and new tokens: [a, b) and what replaces it."""
    p = 0
    n = min(len(old_ids), len(ids))
    while p < n and old_ids[p] == ids[p] and old_lens[p] == lens[p]:
        p += 1
    s = 0
    while s < n - p and old_ids[-1 - s] == ids[-1 - s] and old_lens[-1 - s] == lens[-1 - s]:
        s += 1
    return ti + p, tj - s, ids[p : len(ids) - s], lens[p : len(lens) - s]


def _left_anchor(text: str, start: int, lines: int) -> int:
    """Start of the line `lines` lines above `start`'s, with non-blank text before `start`."""
    x = start
    for _ in range(lines + 1):
        x = text.rfind("\n", 0, x)
        if x < 0:
            return 0
    x += 1
    while x > 0 and not text[x:start].strip():
        y = text.rfind("\n", 0, x - 1)
        x = 0 if y < 0 else y + 1
    return x


def _right_anchor(text: str, end: int, lines: int) -> int:
    """Start of the line `lines` lines below `end`'s, with non-blank text after `end`."""
    x = end
    for _ in range(lines + 1):
        x = text.find("\n", x)
        if x < 0:
            return len(text)
        x += 1
    while x < len(text) and not text[end:x].strip():
        y = text.find("\n", x)
        x = len(text) if y < 0 else y + 1
    return x


# --- editing a text document ----------------------------------------------------------


def retokenize(
    doc: TextDoc, tokenize: TokenizeFn, old: str, new: str, start: int, end: int, delta: int
) -> tuple[int, int, list[int], list[int]]:
    """Token range [a, b) of the old tokens to replace, and the new tokens for it."""
    if not doc.has_lens:  # no offsets: re-tokenize all, splice the differing middle
        ids, _ = tokenize(new)
        old_ids = doc.all_ids()
        return trim(old_ids, [0] * len(old_ids), list(ids), [0] * len(ids), 0, len(old_ids))
    lines = 1
    while True:
        lo_char = _left_anchor(old, start, lines)
        hi_char = _right_anchor(old, end, lines)
        ti, cs = clean_boundary_before(doc, lo_char)
        tj, ce = clean_boundary_after(doc, hi_char)
        window = new[cs : ce + delta]
        ids, lens = tokenize(window)
        ids, lens = list(ids), list(lens or [0] * len(ids))
        old_ids, old_lens, _ = doc.slice(ti, tj)
        whole_left, whole_right = cs == 0, ce == len(old)
        ok_left = whole_left or (
            bool(ids) and bool(old_ids) and ids[0] == old_ids[0] and lens[0] == old_lens[0] and cs + lens[0] <= start
        )
        ok_right = whole_right or (
            bool(ids)
            and bool(old_ids)
            and ids[-1] == old_ids[-1]
            and lens[-1] == old_lens[-1]
            and ce - old_lens[-1] >= end
        )
        if ok_left and ok_right:
            return trim(old_ids, old_lens, ids, lens, ti, tj)
        lines *= 4


def clean_boundary_before(doc: TextDoc, x: int) -> tuple[int, int]:
    """(token index, char) of the last clean token boundary at or before char x."""
    ti, cs = doc.token_at_char(x)
    if ti >= doc.ntokens:
        ti, cs = doc.ntokens, len(doc.text)
    while ti > 0:
        _, lens, _ = doc.slice(ti - 1, ti)
        if lens[0] > 0:
            break
        ti -= 1
    if ti == 0:
        return 0, 0
    return ti, cs


def clean_boundary_after(doc: TextDoc, x: int) -> tuple[int, int]:
    """(token index, char) of the first clean token boundary at or after char x."""
    if x >= len(doc.text):
        return doc.ntokens, len(doc.text)
    ti, cs = doc.token_at_char(x)
    if cs < x:  # x is inside token ti: the boundary after it
        _, lens, _ = doc.slice(ti, ti + 1)
        cs += lens[0]
        ti += 1
    while ti < doc.ntokens:
        _, lens, _ = doc.slice(ti - 1, ti)
        if lens[0] > 0:
            break
        _, lens, _ = doc.slice(ti, ti + 1)
        cs += lens[0]
        ti += 1
    if ti >= doc.ntokens:
        return doc.ntokens, len(doc.text)
    return ti, cs


def replace_tokens(
    doc: TextDoc,
    a: int,
    b: int,
    ids: list[int],
    lens: list[int],
    uids: list[int],
    removed: list[int],
    where: ChunkMap,
) -> None:
    """Replace tokens [a, b) of `doc` by new ones (re-chunking locally); `where` maps each
    token uid to its chunk and is kept up to date."""
    chunks = doc.chunks
    if not chunks:
        chunks.append(Chunk([], [], [], doc))
        doc.sizes.append(0)
        doc.nchars.append(0)
        doc.changed()
    ci, oa = doc.locate(a)
    if b > a:
        cj, ob = doc.locate(b - 1)
        ob += 1
    else:
        cj, ob = ci, oa
    first, last = chunks[ci], chunks[cj]
    m_ids = first.ids[:oa] + ids + last.ids[ob:]
    m_lens = first.lens[:oa] + lens + last.lens[ob:]
    m_uids = first.uids[:oa] + uids + last.uids[ob:]
    where.drop_uids(removed)
    before, after = first.prev, last.next
    pieces: list[Chunk] = []
    if len(m_ids) <= CHUNK_MAX:
        if m_ids:
            first.ids, first.lens, first.uids = m_ids, m_lens, m_uids
            first.nchars = sum(m_lens)
            pieces.append(first)
    else:
        for i in range(0, len(m_ids), CHUNK_TARGET):
            pieces.append(
                Chunk(m_ids[i : i + CHUNK_TARGET], m_lens[i : i + CHUNK_TARGET], m_uids[i : i + CHUNK_TARGET], doc)
            )
    prev = before
    for p in pieces:
        p.prev = prev
        if prev is not None:
            prev.next = p
        prev = p
        where.put(p)
    if prev is not None:
        prev.next = after
    if after is not None:
        after.prev = prev
    kept = {id(p) for p in pieces}
    for c in chunks[ci : cj + 1]:
        if id(c) not in kept:  # unlinked, it is freed at once, not left to the cyclic GC
            c.prev = c.next = None
            where.drop_chunk(c)
    chunks[ci : cj + 1] = pieces
    doc.sizes[ci : cj + 1] = [len(p.ids) for p in pieces]
    doc.nchars[ci : cj + 1] = [p.nchars for p in pieces]
    doc.changed()
    delta = len(ids) - (b - a)
    doc.ntokens += delta
