"""Token-level n-gram index over a workspace's documents, and the drafter that reads it.

What it stores. Every document is kept as its text and its token ids (the model's own
tokenizer). For each token position p and each level n in `LEVELS` the index maps
hash(ids[p-n:p]) -> the token at p ("this context was followed by this token"). Lookup
finds the longest level whose key matches the end of the query, then measures the exact
match of each candidate backwards (up to `MAX_MATCH` tokens) and reads its continuation
forwards. So a match is "longest suffix" up to 64 tokens, not a fixed n.

Why it is incremental. A keystroke must cost well under a millisecond on a 5,000-line
file, so nothing may be proportional to the document:

- Tokens live in chunks (~64 tokens) linked in order; every token carries a uid that never
  changes while the token exists. Postings name uids, not positions, so an insertion does
  not shift anything else in the index. uid -> chunk is a dict; the offset inside a
  chunk is a short `list.index`.
- An edit re-tokenizes a window of whole lines around it (at least one line with
  non-blank text on each side), starting and ending on old token boundaries. The window's
  tokens must agree with the old tokens at both ends (same id, same length) — the point
  where the new tokenization re-synchronises with the old one — otherwise the window is
  widened (x4 lines) and tried again, up to the whole document. Only the differing middle
  is spliced in. Regex-pre-tokenized BPE (GPT-2/Qwen/Llama-3 style) never carries a token
  across such a synchronised boundary, so the result equals a full re-tokenization; a
  property test checks this against the real tokenizers.
- Only postings whose context or continuation changed are touched: the replaced tokens,
  the inserted ones, and for the next 31 tokens the levels whose context reaches back
  across the edit.

Determinism. Answers depend only on the documents' contents, sources and recency order,
never on uids or on the order postings were inserted: weights are integers (so sums are
exact) and ties are broken by token id and a fixed source order. `NgramIndex.rebuilt()`
builds a fresh index from the same documents; the property test compares the two.

Memory is bounded by `max_tokens`: when the indexed tokens exceed it, the least recently
used documents are evicted (a later edit to one returns False; the caller re-opens it with
its full text). `stats()` reports bytes per indexed token.

Sources recorded in `Draft.source`: "suffix" (text after the cursor: the current document
at the cursor, or the FIM suffix part of the prompt), "document" (the current document),
"workspace" (other documents), "history" (earlier accepted completions), "prompt" and
"generated" (the current request's own tokens).
"""

from __future__ import annotations

import logging
import sys
import threading
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Callable, Iterable, Sequence

from .drafter import MAX_DRAFT, NO_DRAFT, Draft

log = logging.getLogger(__name__)

LEVELS = (2, 4, 8, 16, 32)  # context lengths that are indexed; lookup tries the longest first
MAX_MATCH = 64  # exact match length is measured up to this many tokens
CHUNK_TARGET = 64  # tokens per chunk after a split
CHUNK_MAX = 128  # a chunk longer than this is split
_STATIC = 1 << 62  # uid flag for id-only documents (prompt, generated, history)
_SLOT_SHIFT = 24  # id-only uids: _STATIC | slot << 24 | position
_POS_MASK = (1 << _SLOT_SHIFT) - 1
_SLOT_MASK = (1 << (62 - _SLOT_SHIFT)) - 1

# Integer weights so that sums are exact and answers never depend on summation order.
SOURCE_WEIGHT = {"suffix": 10, "document": 10, "generated": 10, "prompt": 8, "history": 7, "workspace": 6}
SOURCE_ORDER = ("suffix", "document", "generated", "prompt", "history", "workspace")  # tie-break


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
            enc = backend.encode(text, add_special_tokens=False)
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


class _Chunk:
    """A run of consecutive tokens of one text document."""

    __slots__ = ("ids", "lens", "uids", "nchars", "prev", "next", "doc")

    def __init__(self, ids: list[int], lens: list[int], uids: list[int], doc: "_TextDoc"):
        self.ids, self.lens, self.uids, self.doc = ids, lens, uids, doc
        self.nchars = sum(lens)
        self.prev: _Chunk | None = None
        self.next: _Chunk | None = None


class _TextDoc:
    """A document with text: tokens in linked chunks so edits stay local.

    `sizes` and `nchars` (tokens and characters per chunk) run parallel to `chunks`; their
    running sums are rebuilt lazily (in C, `accumulate`) after an edit, so finding a token
    or a character is a bisect, not a walk.
    """

    def __init__(self, uri: str, text: str, source: str, stamp: int):
        self.uri, self.text, self.source, self.stamp = uri, text, source, stamp
        self.chunks: list[_Chunk] = []
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


class _IdsDoc:
    """An append-only document of token ids only (prompt, generated tokens, history)."""

    def __init__(self, uri: str, source: str, stamp: int, slot: int):
        self.uri, self.source, self.stamp, self.slot = uri, source, stamp, slot
        self.ids: list[int] = []
        self.base = _STATIC | (slot << _SLOT_SHIFT)
        self.suffix_span = (0, 0)  # positions labelled "suffix" (the FIM suffix of a prompt)

    @property
    def ntokens(self) -> int:
        return len(self.ids)


# --- the index --------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One occurrence of the query's context: what preceded it and what followed."""

    before: list[int]  # tokens before the position, nearest first (reversed), <= MAX_MATCH
    after: list[int]  # tokens from the position on
    label: str  # source label (see module docstring)
    rank: int  # recency rank of its document among its kind (0 = most recent)


@dataclass(frozen=True)
class IndexStats:
    documents: int
    tokens: int
    memory_bytes: int

    @property
    def bytes_per_token(self) -> float:
        return self.memory_bytes / self.tokens if self.tokens else 0.0


class NgramIndex:
    """Postings hash(context) -> token uids over text documents and id-only documents.

    Thread-safe: every public method takes the index lock, so a didChange on the server
    thread and a lookup on the model thread never see a half-applied edit.
    """

    def __init__(self, tokenize: TokenizeFn | Any | None = None, max_tokens: int = 2_000_000, max_history: int = 64):
        self.tokenize: TokenizeFn | None = None if tokenize is None else (
            tokenize if _is_tokenize_fn(tokenize) else make_tokenize(tokenize))
        self.max_tokens = max_tokens
        self.max_history = max_history
        self.lock = threading.RLock()
        self._post: list[dict[int, int | list[int]]] = [{} for _ in LEVELS]
        self._where: dict[int, _Chunk] = {}  # text-token uid -> its chunk
        self._docs: dict[str, _TextDoc | _IdsDoc] = {}
        self._slots: dict[int, _IdsDoc] = {}
        self._next_uid = 1
        self._next_slot = 1
        self._clock = 0
        self._history_seq = 0
        self._ntokens = 0
        self._rank_cache: dict[str, int] | None = None

    # --- public: documents -----------------------------------------------------------

    def open(self, uri: str, text: str, source: str = "document", stamp: int | None = None) -> None:
        """Index a document's text (replacing what was indexed under `uri`)."""
        if self.tokenize is None:
            raise ValueError("this index has no tokenizer: use open_ids")
        with self.lock:
            self._remove_doc(uri)
            ids, lens = self.tokenize(text)
            doc = _TextDoc(uri, text, source, self._stamp(stamp))
            doc.has_lens = lens is not None
            self._docs[uri] = doc
            self._insert_text_tokens(doc, list(ids), list(lens) if lens is not None else [0] * len(ids))
            self._evict(keep=uri)

    def open_ids(self, uri: str, ids: Sequence[int], source: str, stamp: int | None = None) -> None:
        """Index a sequence of token ids (no text) as a document; append with `append_ids`."""
        with self.lock:
            self._remove_doc(uri)
            slot = self._next_slot
            self._next_slot += 1
            doc = _IdsDoc(uri, source, self._stamp(stamp), slot)
            self._docs[uri] = doc
            self._slots[slot] = doc
            self._append(doc, ids)
            self._evict(keep=uri)

    def append_ids(self, uri: str, ids: Sequence[int]) -> None:
        with self.lock:
            doc = self._docs[uri]
            assert isinstance(doc, _IdsDoc)
            self._append(doc, ids)

    def close(self, uri: str) -> None:
        with self.lock:
            self._remove_doc(uri)

    def touch(self, uri: str) -> None:
        """Mark a document as just used (recency for ranking and eviction)."""
        with self.lock:
            if uri in self._docs:
                self._docs[uri].stamp = self._stamp(None)
                self._rank_cache = None

    def edit(self, uri: str, start: int, end: int, new_text: str) -> bool:
        """Replace text[start:end] (character offsets) by `new_text`.

        Returns False if `uri` is not indexed (never opened, closed, or evicted): the
        caller should `open` it with its full text.
        """
        with self.lock:
            doc = self._docs.get(uri)
            if not isinstance(doc, _TextDoc):
                return False
            old = doc.text
            if not 0 <= start <= end <= len(old):
                raise ValueError(f"edit {start}:{end} outside a document of {len(old)} chars")
            new = old[:start] + new_text + old[end:]
            a, b, ids, lens = self._retokenize(doc, old, new, start, end, len(new_text) - (end - start))
            doc.text = new
            self._splice(doc, a, b, ids, lens)
            doc.stamp = self._stamp(None)
            self._rank_cache = None
            self._evict(keep=uri)
            return True

    def add_history(self, ids: Sequence[int]) -> None:
        """Remember an accepted completion's tokens (the oldest beyond `max_history` go)."""
        if not ids:
            return
        with self.lock:
            self._history_seq += 1
            self.open_ids(f"history:{self._history_seq}", ids, "history")
            hist = sorted((d.stamp, u) for u, d in self._docs.items() if d.source == "history")
            for _, u in hist[: max(0, len(hist) - self.max_history)]:
                self._remove_doc(u)

    # --- public: reading -------------------------------------------------------------

    def __contains__(self, uri: str) -> bool:
        return uri in self._docs

    def uris(self) -> list[str]:
        return list(self._docs)

    def text(self, uri: str) -> str:
        doc = self._docs[uri]
        return doc.text if isinstance(doc, _TextDoc) else ""

    def tokens(self, uri: str) -> list[int]:
        with self.lock:
            doc = self._docs[uri]
            return doc.all_ids() if isinstance(doc, _TextDoc) else list(doc.ids)

    @property
    def ntokens(self) -> int:
        return self._ntokens

    def bucket(self, level: int, key: int) -> list[int]:
        """uids of positions whose context of length LEVELS[level] hashes to `key`."""
        got = self._post[level].get(key)
        if got is None:
            return []
        return [got] if isinstance(got, int) else list(got)

    def resolve(self, uid: int, back: int, forward: int, current: str | None = None,
                cursor_uids: frozenset[int] = frozenset()) -> Candidate:
        """Context before and continuation after the position `uid`, with its source label."""
        if uid & _STATIC:
            doc = self._slots[(uid >> _SLOT_SHIFT) & _SLOT_MASK]
            p = uid & _POS_MASK
            ids = doc.ids
            before = ids[max(0, p - back):p][::-1]
            after = ids[p:p + forward]
            label = doc.source
            s0, s1 = doc.suffix_span
            if s0 <= p < s1:
                label = "suffix"
            return Candidate(before, after, label, self._rank(doc))
        chunk = self._where[uid]
        off = chunk.uids.index(uid)
        before = chunk.ids[max(0, off - back):off][::-1]
        c = chunk.prev
        while len(before) < back and c is not None:
            need = back - len(before)
            before += c.ids[-need:][::-1]
            c = c.prev
        after = chunk.ids[off:off + forward]
        c = chunk.next
        while len(after) < forward and c is not None:
            after += c.ids[: forward - len(after)]
            c = c.next
        doc = chunk.doc
        if uid in cursor_uids:
            label = "suffix"
        elif doc.uri == current:
            label = "document"
        else:
            label = "workspace" if doc.source == "document" else doc.source
        return Candidate(before, after, label, self._rank(doc))

    def cursor_uids(self, uri: str, offset: int, around: int = 1) -> frozenset[int]:
        """uids of the tokens at the cursor (+-`around`): matches there draft the text after it."""
        with self.lock:
            doc = self._docs.get(uri)
            if not isinstance(doc, _TextDoc):
                return frozenset()
            ti, _ = doc.token_at_char(min(max(0, offset), len(doc.text)))
            return frozenset(doc.slice(max(0, ti - around), ti + around + 1)[2])

    def stats(self) -> IndexStats:
        """Documents, tokens, and an estimate of the memory the index holds."""
        with self.lock:
            size = sum(sys.getsizeof(d) for d in self._post) + sys.getsizeof(self._where)
            for d in self._post:  # the key ints and the multi-entry buckets
                size += 32 * len(d)
                for v in d.values():
                    if not isinstance(v, int):
                        size += sys.getsizeof(v)
            size += 32 * len(self._where)  # the uid ints (shared by chunks and postings)
            for doc in self._docs.values():
                size += sys.getsizeof(doc.text) if isinstance(doc, _TextDoc) else 0
                if isinstance(doc, _TextDoc):
                    for c in doc.chunks:
                        size += 3 * sys.getsizeof(c.ids) + 32 * len(c.ids) + 120
                else:
                    size += sys.getsizeof(doc.ids) + 32 * len(doc.ids)
            return IndexStats(len(self._docs), self._ntokens, size)

    def rebuilt(self) -> "NgramIndex":
        """A fresh index built from scratch from the same documents (tests, compaction)."""
        with self.lock:
            fresh = NgramIndex(self.tokenize, self.max_tokens, self.max_history)
            fresh._history_seq = self._history_seq
            for uri, doc in sorted(self._docs.items(), key=lambda kv: kv[1].stamp):
                if isinstance(doc, _TextDoc):
                    fresh.open(uri, doc.text, doc.source, stamp=doc.stamp)
                else:
                    fresh.open_ids(uri, doc.ids, doc.source, stamp=doc.stamp)
                    fresh._docs[uri].suffix_span = doc.suffix_span  # type: ignore[union-attr]
            fresh._clock = self._clock
            return fresh

    def set_suffix_span(self, uri: str, start: int, end: int) -> None:
        doc = self._docs[uri]
        if isinstance(doc, _IdsDoc):
            doc.suffix_span = (start, end)

    # --- internals: bookkeeping ------------------------------------------------------

    def _stamp(self, stamp: int | None) -> int:
        self._rank_cache = None
        if stamp is None:
            self._clock += 1
            return self._clock
        self._clock = max(self._clock, stamp)
        return stamp

    def _rank(self, doc: _TextDoc | _IdsDoc) -> int:
        """Recency rank among text documents, or among history entries; 0 = newest."""
        if self._rank_cache is None:
            ranks: dict[str, int] = {}
            for kind in ("text", "history"):
                docs = [d for d in self._docs.values()
                        if (isinstance(d, _TextDoc) if kind == "text" else d.source == "history")]
                docs.sort(key=lambda d: -d.stamp)
                for r, d in enumerate(docs):
                    ranks[d.uri] = r
            self._rank_cache = ranks
        return self._rank_cache.get(doc.uri, 0)

    def _evict(self, keep: str) -> None:
        while self._ntokens > self.max_tokens and len(self._docs) > 1:
            victim = min((d for u, d in self._docs.items() if u != keep), key=lambda d: d.stamp)
            log.info("n-gram index over %d tokens: evicting %s (%d tokens)", self.max_tokens, victim.uri, victim.ntokens)
            self._remove_doc(victim.uri)

    def _remove_doc(self, uri: str) -> None:
        doc = self._docs.pop(uri, None)
        if doc is None:
            return
        self._rank_cache = None
        if isinstance(doc, _IdsDoc):
            ids = doc.ids
            for p in range(len(ids)):
                for li, n in enumerate(LEVELS):
                    if p >= n:
                        self._unpost(li, hash(tuple(ids[p - n:p])), doc.base | p)
            del self._slots[doc.slot]
        else:
            ids, _, uids = doc.slice(0, doc.ntokens)
            self._post_range(ids, uids, 0, 0, len(ids), len(ids), add=False)
            for u in uids:
                del self._where[u]
            for c in doc.chunks:
                c.prev = c.next = None
        self._ntokens -= doc.ntokens

    def _append(self, doc: _IdsDoc, new: Sequence[int]) -> None:
        ids = doc.ids
        start = len(ids)
        if start + len(new) > _POS_MASK:
            raise ValueError("id-only document too long")
        ids.extend(new)
        for p in range(start, len(ids)):
            for li, n in enumerate(LEVELS):
                if p >= n:
                    self._putpost(li, hash(tuple(ids[p - n:p])), doc.base | p)
        self._ntokens += len(new)

    def _putpost(self, li: int, key: int, uid: int) -> None:
        d = self._post[li]
        got = d.get(key)
        if got is None:
            d[key] = uid
        elif isinstance(got, int):
            d[key] = [got, uid]
        else:
            got.append(uid)

    def _unpost(self, li: int, key: int, uid: int) -> None:
        d = self._post[li]
        got = d[key]
        if isinstance(got, int):
            del d[key]
        else:
            got.remove(uid)
            if len(got) == 1:
                d[key] = got[0]

    def _post_range(self, ids: list[int], uids: list[int], base: int, lo: int, hi: int, full_hi: int,
                    add: bool) -> None:
        """(Un)post positions lo..hi-1 of a flat window `ids` that starts at doc position `base`.

        Positions below `full_hi` get every level; a position p >= full_hi only the levels
        whose context reaches back before `full_hi` (n > p - full_hi). `uids[i]` is the uid of
        window position lo + i. Contexts that would start before the document are skipped.
        """
        op = self._putpost if add else self._unpost
        for p in range(lo, hi):
            uid = uids[p - lo]
            dist = p - full_hi
            for li, n in enumerate(LEVELS):
                if dist >= 0 and n <= dist:
                    continue
                if p - n < 0 or base + p - n < 0:
                    continue
                op(li, hash(tuple(ids[p - n:p])), uid)

    # --- internals: text documents -------------------------------------------------------

    def _insert_text_tokens(self, doc: _TextDoc, ids: list[int], lens: list[int]) -> None:
        uids = list(range(self._next_uid, self._next_uid + len(ids)))
        self._next_uid += len(ids)
        prev: _Chunk | None = None
        for i in range(0, len(ids), CHUNK_TARGET):
            c = _Chunk(ids[i:i + CHUNK_TARGET], lens[i:i + CHUNK_TARGET], uids[i:i + CHUNK_TARGET], doc)
            c.prev = prev
            if prev is not None:
                prev.next = c
            prev = c
            doc.chunks.append(c)
            doc.sizes.append(len(c.ids))
            doc.nchars.append(c.nchars)
            for u in c.uids:
                self._where[u] = c
        doc.changed()
        doc.ntokens = len(ids)
        self._ntokens += len(ids)
        self._post_range(ids, uids, 0, 0, len(ids), len(ids), add=True)

    def _retokenize(self, doc: _TextDoc, old: str, new: str, start: int, end: int,
                    delta: int) -> tuple[int, int, list[int], list[int]]:
        """Token range [a, b) of the old tokens to replace, and the new tokens for it."""
        if not doc.has_lens:  # no offsets: re-tokenize all, splice the differing middle
            ids, _ = self.tokenize(new)  # type: ignore[misc]
            old_ids = doc.all_ids()
            return _trim(old_ids, [0] * len(old_ids), list(ids), [0] * len(ids), 0, len(old_ids))
        lines = 1
        while True:
            lo_char = _left_anchor(old, start, lines)
            hi_char = _right_anchor(old, end, lines)
            ti, cs = self._clean_boundary_before(doc, lo_char)
            tj, ce = self._clean_boundary_after(doc, hi_char)
            window = new[cs:ce + delta]
            ids, lens = self.tokenize(window)  # type: ignore[misc]
            ids, lens = list(ids), list(lens or [0] * len(ids))
            old_ids, old_lens, _ = doc.slice(ti, tj)
            whole_left, whole_right = cs == 0, ce == len(old)
            ok_left = whole_left or (bool(ids) and bool(old_ids) and ids[0] == old_ids[0]
                                     and lens[0] == old_lens[0] and cs + lens[0] <= start)
            ok_right = whole_right or (bool(ids) and bool(old_ids) and ids[-1] == old_ids[-1]
                                       and lens[-1] == old_lens[-1] and ce - old_lens[-1] >= end)
            if ok_left and ok_right:
                return _trim(old_ids, old_lens, ids, lens, ti, tj)
            lines *= 4

    @staticmethod
    def _clean_boundary_before(doc: _TextDoc, x: int) -> tuple[int, int]:
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

    @staticmethod
    def _clean_boundary_after(doc: _TextDoc, x: int) -> tuple[int, int]:
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

    def _splice(self, doc: _TextDoc, a: int, b: int, new_ids: list[int], new_lens: list[int]) -> None:
        """Replace tokens [a, b) by new ones, updating only the postings that change."""
        if a == b and not new_ids:
            return
        reach = LEVELS[-1]
        n_old = doc.ntokens
        # Postings of removed tokens, and of the next `reach` tokens at the levels whose
        # context crosses the edit, go first (their keys computed from the old tokens).
        w0 = max(0, a - reach)
        hi_old = min(n_old, b + reach)
        ids_old, _, uids_old = doc.slice(w0, hi_old)
        self._post_range(ids_old, uids_old[a - w0:], w0, a - w0, hi_old - w0, b - w0, add=False)
        removed = uids_old[a - w0:b - w0]
        new_uids = list(range(self._next_uid, self._next_uid + len(new_ids)))
        self._next_uid += len(new_ids)
        self._replace_tokens(doc, a, b, new_ids, new_lens, new_uids, removed)
        m = len(new_ids)
        hi_new = min(doc.ntokens, a + m + reach)
        ids_new, _, uids_new = doc.slice(w0, hi_new)
        self._post_range(ids_new, uids_new[a - w0:], w0, a - w0, hi_new - w0, a + m - w0, add=True)

    def _replace_tokens(self, doc: _TextDoc, a: int, b: int, ids: list[int], lens: list[int],
                        uids: list[int], removed: list[int]) -> None:
        chunks = doc.chunks
        if not chunks:
            chunks.append(_Chunk([], [], [], doc))
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
        for u in removed:
            del self._where[u]
        before, after = first.prev, last.next
        pieces: list[_Chunk] = []
        if len(m_ids) <= CHUNK_MAX:
            if m_ids:
                first.ids, first.lens, first.uids = m_ids, m_lens, m_uids
                first.nchars = sum(m_lens)
                pieces.append(first)
        else:
            for i in range(0, len(m_ids), CHUNK_TARGET):
                pieces.append(_Chunk(m_ids[i:i + CHUNK_TARGET], m_lens[i:i + CHUNK_TARGET],
                                     m_uids[i:i + CHUNK_TARGET], doc))
        prev = before
        for p in pieces:
            p.prev = prev
            if prev is not None:
                prev.next = p
            prev = p
            for u in p.uids:
                self._where[u] = p
        if prev is not None:
            prev.next = after
        if after is not None:
            after.prev = prev
        chunks[ci:cj + 1] = pieces
        doc.sizes[ci:cj + 1] = [len(p.ids) for p in pieces]
        doc.nchars[ci:cj + 1] = [p.nchars for p in pieces]
        doc.changed()
        delta = len(ids) - (b - a)
        doc.ntokens += delta
        self._ntokens += delta


def _is_tokenize_fn(obj: Any) -> bool:
    return callable(obj) and not hasattr(obj, "encode") and not hasattr(obj, "backend_tokenizer")


def _trim(old_ids: list[int], old_lens: list[int], ids: list[int], lens: list[int], ti: int,
          tj: int) -> tuple[int, int, list[int], list[int]]:
    """Drop the common prefix and suffix of old and new tokens: [a, b) and what replaces it."""
    p = 0
    n = min(len(old_ids), len(ids))
    while p < n and old_ids[p] == ids[p] and old_lens[p] == lens[p]:
        p += 1
    s = 0
    while (s < n - p and old_ids[-1 - s] == ids[-1 - s] and old_lens[-1 - s] == lens[-1 - s]):
        s += 1
    return ti + p, tj - s, ids[p:len(ids) - s], lens[p:len(lens) - s]


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


# --- the drafter ------------------------------------------------------------------------


@dataclass
class WorkspaceDrafter:
    """Drafts from a workspace index plus the request's own tokens (the `Drafter` protocol).

    Per request: `set_request(uri, cursor)` names the current document (its matches are
    "document", those at the cursor "suffix"); `begin(prompt_ids)` indexes the prompt (the
    FIM suffix part labelled "suffix") into a private index; `propose(ids, k)` also indexes
    the generated tokens as they grow. Among the candidates of the longest matching level,
    each votes with weight source x recency x match length for its next token; the draft
    follows the winning token while its share of the vote is >= `min_agreement`, and chains
    through the index again when every candidate's text has run out.
    """

    index: NgramIndex | None = None
    fim_suffix_id: int | None = None
    fim_middle_id: int | None = None
    index_prompt: bool = True
    min_agreement: float = 0.6  # a branch is followed only if one continuation has this share
    max_candidates: int = 64  # a context seen more often than this is too ambiguous to draft
    max_chain: int = 8  # lookups per proposal
    _own: NgramIndex = field(default_factory=NgramIndex)
    _uri: str | None = None
    _cursor_uids: frozenset[int] = frozenset()
    _prompt_len: int = 0
    _generated: int = 0

    def set_request(self, uri: str | None = None, cursor: int | None = None) -> None:
        """The document being completed and the cursor's character offset in it."""
        self._uri = uri
        self._cursor_uids = frozenset()
        if uri is not None and cursor is not None and self.index is not None:
            self._cursor_uids = self.index.cursor_uids(uri, cursor)

    def begin(self, prompt_ids: Sequence[int]) -> None:
        own = NgramIndex()
        prompt = list(prompt_ids)
        self._prompt_len = len(prompt)
        self._generated = 0
        if self.index_prompt:
            own.open_ids("prompt", prompt, "prompt")
            if self.fim_suffix_id is not None and self.fim_middle_id is not None:
                try:
                    s0 = prompt.index(self.fim_suffix_id) + 1
                    s1 = prompt.index(self.fim_middle_id, s0)
                    own.set_suffix_span("prompt", s0, s1)
                except ValueError:
                    pass
        own.open_ids("generated", [], "generated")
        self._own = own

    def propose(self, ids: Sequence[int], max_tokens: int) -> Draft:
        max_tokens = min(max_tokens, MAX_DRAFT)
        if max_tokens <= 0 or not ids:
            return NO_DRAFT
        self._sync_generated(ids)
        tail = list(ids[-MAX_MATCH:])
        drafted: list[int] = []
        agreement: list[float] = []
        source, match_len = "none", 0
        for _ in range(self.max_chain):
            room = max_tokens - len(drafted)
            if room <= 0:
                break
            got = self.lookup(tail, room)
            if got is None:
                break
            toks, agr, src, m, exhausted = got
            if not drafted:
                source, match_len = src, m
            drafted += toks
            agreement += agr
            if not exhausted:
                break
            tail = (tail + toks)[-MAX_MATCH:]
        if not drafted:
            return NO_DRAFT
        return Draft(tokens=tuple(drafted), source=source, match_len=match_len, agreement=tuple(agreement))

    def lookup(self, tail: Sequence[int], limit: int) -> tuple[list[int], list[float], str, int, bool] | None:
        """Continuation of `tail`: (tokens, agreement, source, match length, ran out of text)."""
        indexes = [self._own] + ([self.index] if self.index is not None else [])
        for ix in indexes:
            ix.lock.acquire()
        try:
            return self._lookup(indexes, tail, limit)
        finally:
            for ix in indexes:
                ix.lock.release()

    def _lookup(self, indexes: list[NgramIndex], tail: Sequence[int], limit: int):
        found: list[tuple[NgramIndex, int]] = []
        level = 0
        for li in range(len(LEVELS) - 1, -1, -1):
            n = LEVELS[li]
            if len(tail) < n:
                continue
            key = hash(tuple(tail[-n:]))
            for ix in indexes:
                found += [(ix, u) for u in ix.bucket(li, key)]
            if found:
                level = n
                break
        if not found or len(found) > self.max_candidates:
            return None
        rev = list(tail[::-1][:MAX_MATCH])
        live: list[tuple[int, int, str, list[int]]] = []  # (weight, match, label, after)
        for ix, uid in found:
            c = ix.resolve(uid, MAX_MATCH, limit, self._uri, self._cursor_uids)
            m = _common_prefix(rev, c.before)
            if m < level or not c.after:
                continue  # a hash collision, or nothing follows
            live.append((SOURCE_WEIGHT.get(c.label, 5) * _recency(c.rank) * m, m, c.label, c.after))
        if not live:
            return None
        toks: list[int] = []
        agr: list[float] = []
        source, match_len = "none", 0
        exhausted = False
        for j in range(limit):
            votes: dict[int, int] = {}
            total = 0
            for w, _, _, after in live:
                if len(after) > j:
                    votes[after[j]] = votes.get(after[j], 0) + w
                    total += w
            if not votes:
                exhausted = True
                break
            tok, best = max(votes.items(), key=lambda kv: (kv[1], -kv[0]))
            share = best / total
            if share < self.min_agreement:
                break
            live = [c for c in live if len(c[3]) > j and c[3][j] == tok]
            if j == 0:
                by_source: dict[str, int] = {}
                for w, m, label, _ in live:
                    by_source[label] = by_source.get(label, 0) + w
                source = max(by_source, key=lambda s: (by_source[s], -SOURCE_ORDER.index(s) if s in SOURCE_ORDER else -99))
                match_len = max(m for _, m, _, _ in live)
            toks.append(tok)
            agr.append(share)
        if not toks:
            return None
        return toks, agr, source, match_len, exhausted

    def _sync_generated(self, ids: Sequence[int]) -> None:
        n = len(ids) - self._prompt_len
        if n < self._generated or "generated" not in self._own:
            self.begin(list(ids))  # not a continuation of the prompt we began with
            return
        if n > self._generated:
            self._own.append_ids("generated", list(ids[self._prompt_len + self._generated:]))
            self._generated = n


def _recency(rank: int) -> int:
    return 8 >> min(rank, 3)  # 8, 4, 2, 1


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# --- one index per workspace folder ---------------------------------------------------


def _norm(uri: str) -> str:
    return uri.rstrip("/")


class WorkspaceIndexes:
    """One `NgramIndex` per workspace folder (longest folder prefix wins) and a default one."""

    def __init__(self, tokenize: TokenizeFn | Any, folders: Iterable[str] = (), max_tokens: int = 2_000_000):
        self.tokenize = tokenize if _is_tokenize_fn(tokenize) else make_tokenize(tokenize)
        self.max_tokens = max_tokens
        self.default = NgramIndex(self.tokenize, max_tokens)
        self._by_folder: dict[str, NgramIndex] = {}
        self.set_folders(folders)

    def set_folders(self, folders: Iterable[str]) -> None:
        """Replace the folder list; documents move to the index of their new folder."""
        wanted = [_norm(f) for f in folders]
        old = {"": self.default, **self._by_folder}
        self._by_folder = {f: self._by_folder.get(f) or NgramIndex(self.tokenize, self.max_tokens) for f in wanted}
        for ix in old.values():
            for uri in ix.uris():
                target = self.index_for(uri)
                if target is not ix and ix.tokenize is not None and ix._docs[uri].source == "document":
                    target.open(uri, ix.text(uri))
                    ix.close(uri)

    def folder_for(self, uri: str) -> str | None:
        best = None
        for f in self._by_folder:
            if (uri == f or uri.startswith(f + "/")) and (best is None or len(f) > len(best)):
                best = f
        return best

    def index_for(self, uri: str) -> NgramIndex:
        f = self.folder_for(uri)
        return self.default if f is None else self._by_folder[f]

    def indexes(self) -> list[NgramIndex]:
        return [self.default, *self._by_folder.values()]

    def open(self, uri: str, text: str) -> None:
        self.index_for(uri).open(uri, text)

    def edit(self, uri: str, start: int, end: int, new_text: str) -> bool:
        return self.index_for(uri).edit(uri, start, end, new_text)

    def close(self, uri: str) -> None:
        self.index_for(uri).close(uri)

    def add_history(self, uri: str, ids: Sequence[int]) -> None:
        """An accepted completion in document `uri`: remembered by that document's index."""
        self.index_for(uri).add_history(ids)

    def drafter_for(self, uri: str, cursor: int | None = None, **options: Any) -> WorkspaceDrafter:
        d = WorkspaceDrafter(self.index_for(uri), **options)
        d.set_request(uri, cursor)
        return d
