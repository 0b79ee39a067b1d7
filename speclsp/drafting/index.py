"""The n-gram index: postings hash(context) -> token uids over a workspace's documents.

For each token position p and each level n in `LEVELS` the index maps
hash(ids[p-n:p]) -> the token at p ("this context was followed by this token"). Lookup
finds the longest level whose key matches the end of the query, then measures the exact
match of each candidate backwards (up to `MAX_MATCH` tokens) and reads its continuation
forwards. So a match is "longest suffix" up to 64 tokens, not a fixed n. The documents
themselves (text, tokens in chunks, incremental re-tokenization) are `tokens.py`'s.

Only postings whose context or continuation changed are touched by an edit: the replaced
tokens, the inserted ones, and for the next 31 tokens the levels whose context reaches
back across the edit.

Determinism. Answers depend only on the documents' contents, sources and recency order,
never on uids or on the order postings were inserted. `NgramIndex.rebuilt()` builds a
fresh index from the same documents; the property test compares the two.

Memory is bounded by `max_tokens`: when the indexed tokens exceed it, the least recently
used documents are evicted (a later edit to one returns False; the caller re-opens it with
its full text). `stats()` reports bytes per indexed token (measured ~500).

This file is one concern (the postings and the documents' lifecycle in them) at ~450 lines.
"""

from __future__ import annotations

import logging
import sys
import threading
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .tokens import (
    CHUNK_TARGET,
    PIECE_CHARS,
    POS_MASK,
    SLOT_MASK,
    SLOT_SHIFT,
    STATIC,
    Chunk,
    ChunkMap,
    IdsDoc,
    TextDoc,
    TokenizeFn,
    is_tokenize_fn,
    make_tokenize,
    replace_tokens,
    retokenize,
    split_at_lines,
)

log = logging.getLogger(__name__)

LEVELS = (2, 4, 8, 16, 32)  # context lengths that are indexed; lookup tries the longest first
# A bucket (the uids posted under one key) is an int, bytes (uids as native uint64, in order),
# or above BIG_BUCKET uids a dict uid -> None kept apart (`_big`): repeated text
# (`"0," * 100000`) makes buckets of 10^5 uids, and removing each of them from a sequence made
# closing such a document quadratic. A dict keeps
# the same order (insertion order), so `bucket()` answers exactly as before.
# Neither ints nor bytes are objects the garbage collector tracks, so neither are the posting
# dicts that hold them, however large (docs/reliability.md, the long soak): with lists every
# full collection walked ~200k buckets; with tuples (or arrays, which 3.11 tracks), each fresh
# one (a tuple is tracked until a collection sees it) made its posting dict tracked again, so the next collection of the
# youngest generation walked the whole dict, and a full one all five (0.1-0.2 s, on the index
# thread, holding the GIL while the event loop waited).
BIG_BUCKET = 32


_ORDER = sys.byteorder  # the packed uids are native uint64 (`memoryview.cast("Q")` reads them)


def _packed(uids: Iterable[int]) -> bytes:
    return array("Q", uids).tobytes()


def _uids(packed: bytes) -> list[int]:
    return memoryview(packed).cast("Q").tolist()


MAX_MATCH = 64  # exact match length is measured up to this many tokens
DEFAULT_MAX_TOKENS = 500_000  # ~250 MB at the measured ~500 bytes per token
# One document may fill at most this share of the index. A larger one is not indexed
# (drafting cannot copy from it; completions in it still work): indexed, it evicted every
# other document, and each later open or accepted completion evicted it in turn, so every
# keystroke tokenized and posted it again (seconds a keystroke).
MAX_DOC_SHARE = 0.5
# A text longer than this many characters per allowed token is refused without tokenizing it
# (no tokenizer of code averages more; tokenizing megabytes takes seconds, and every
# completion waits for the index updates before it).
MAX_CHARS_PER_TOKEN = 8


@dataclass
class Refused:
    """A document too large to index: its length now, and its characters per token when
    it was refused (to tell, edit by edit, when it may fit again without tokenizing it)."""

    chars: int
    chars_per_token: float


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

    def __init__(
        self, tokenize: TokenizeFn | Any | None = None, max_tokens: int = DEFAULT_MAX_TOKENS, max_history: int = 64
    ):
        self.tokenize: TokenizeFn | None = (
            None if tokenize is None else (tokenize if is_tokenize_fn(tokenize) else make_tokenize(tokenize))
        )
        self.max_tokens = max_tokens
        self.max_history = max_history
        self.lock = threading.RLock()
        self._post: list[dict[int, int | bytes]] = [{} for _ in LEVELS]
        self._big: list[dict[int, dict[int, None]]] = [{} for _ in LEVELS]  # buckets over BIG_BUCKET
        self._where = ChunkMap()  # text-token uid -> its chunk
        self._docs: dict[str, TextDoc | IdsDoc] = {}
        self._refused: dict[str, Refused] = {}
        self._slots: dict[int, IdsDoc] = {}
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
            self._refused.pop(uri, None)
            if len(text) > MAX_CHARS_PER_TOKEN * self.max_doc_tokens:
                ids: list[int] = []
                lens: list[int] | None = None
                read = len(text)
                n = len(text) // MAX_CHARS_PER_TOKEN  # at least
            else:
                ids, lens, read = self._tokenize_upto(text, self.max_doc_tokens)
                n = len(ids)
            if n > self.max_doc_tokens:
                self._refused[uri] = Refused(len(text), read / n)
                log.warning(
                    "not indexing %.200s: %s%d tokens, over the %d one document may hold (half of "
                    "indexMaxTokens); completions in it work, drafting does not copy from it",
                    uri,
                    "" if ids and read == len(text) else "at least ",
                    n,
                    self.max_doc_tokens,
                )
                return
            # Room first: the index never holds its cap plus the new document (with the
            # soak's 300k-character documents that peak was ~100 MB), and what eviction
            # frees is there for the insert to reuse.
            self._evict(keep=uri, incoming=len(ids))
            doc = TextDoc(uri, text, source, self._stamp(stamp))
            doc.has_lens = lens is not None
            self._docs[uri] = doc
            self._insert_text_tokens(doc, list(ids), list(lens) if lens is not None else [0] * len(ids))

    def _tokenize_upto(self, text: str, limit: int) -> tuple[list[int], list[int] | None, int]:
        """Tokens (and their lengths) of `text`, a piece of PIECE_CHARS at a time, stopping
        after the piece that takes them past `limit`; also how many characters were read.
        Pieces: the GIL is held while each piece's result becomes lists, not for the whole
        document, and a document over the cap is never held whole as lists of ints (young
        lists of 10^5 ints made the collector's youngest generation slow)."""
        assert self.tokenize is not None
        ids: list[int] = []
        lens: list[int] | None = []
        read = 0
        for piece in split_at_lines(text, PIECE_CHARS):
            got, got_lens = self.tokenize(piece)
            ids += got
            if got_lens is None:
                lens = None
            elif lens is not None:
                lens += got_lens
            read += len(piece)
            if len(ids) > limit:
                break
        return ids, lens, read

    def open_ids(self, uri: str, ids: Sequence[int], source: str, stamp: int | None = None) -> None:
        """Index a sequence of token ids (no text) as a document; append with `append_ids`."""
        with self.lock:
            self._remove_doc(uri)
            slot = self._next_slot
            self._next_slot += 1
            self._evict(keep=uri, incoming=len(ids))
            doc = IdsDoc(uri, source, self._stamp(stamp), slot)
            self._docs[uri] = doc
            self._slots[slot] = doc
            self._append(doc, ids)

    def append_ids(self, uri: str, ids: Sequence[int]) -> None:
        with self.lock:
            doc = self._docs[uri]
            assert isinstance(doc, IdsDoc)
            self._append(doc, ids)

    def close(self, uri: str) -> None:
        with self.lock:
            self._remove_doc(uri)
            self._refused.pop(uri, None)

    def discard(self) -> None:
        """Empty at once, without unposting token by token: this index is being replaced
        (a new tokenizer, a folder gone). Chunks are unlinked first, so reference counting
        frees them now; dropped as they were, their cycles (chunk <-> chunk, chunk <->
        document) waited for a full collection, which then walked tens of thousands of
        objects on whichever thread it ran, holding the GIL while the event loop waited."""
        with self.lock:
            for doc in self._docs.values():
                if isinstance(doc, TextDoc):
                    for c in doc.chunks:
                        c.prev = c.next = None
                    doc.chunks = []
            self._docs.clear()
            self._slots.clear()
            self._refused.clear()
            self._post = [{} for _ in LEVELS]
            self._big = [{} for _ in LEVELS]
            self._where = ChunkMap()
            self._ntokens = 0
            self._rank_cache = None

    @property
    def max_doc_tokens(self) -> int:
        """The most tokens one document may hold here (MAX_DOC_SHARE of the cap)."""
        return int(self.max_tokens * MAX_DOC_SHARE)

    def refused(self) -> list[str]:
        """The documents too large to index (their edits cost nothing here). Without the
        lock: the stats ask on the event loop, while this thread may hold it for seconds
        (tokenizing a large document); copying a dict's keys is atomic under the GIL."""
        return list(self._refused)

    def touch(self, uri: str) -> None:
        """Mark a document as just used (recency for ranking and eviction)."""
        with self.lock:
            if uri in self._docs:
                self._docs[uri].stamp = self._stamp(None)
                self._rank_cache = None

    def edit(self, uri: str, start: int, end: int, new_text: str) -> bool:
        """Replace text[start:end] (character offsets) by `new_text`.

        Returns False if `uri` is not indexed (never opened, closed, or evicted): the
        caller should `open` it with its full text. A document refused as too large stays
        so (True, nothing done) until its length suggests it fits again: then False.
        """
        with self.lock:
            big = self._refused.get(uri)
            if big is not None:
                big.chars += len(new_text) - (end - start)
                return big.chars / big.chars_per_token > 0.8 * self.max_doc_tokens
            doc = self._docs.get(uri)
            if not isinstance(doc, TextDoc):
                return False
            old = doc.text
            if not 0 <= start <= end <= len(old):
                raise ValueError(f"edit {start}:{end} outside a document of {len(old)} chars")
            new = old[:start] + new_text + old[end:]
            assert self.tokenize is not None  # a text document was opened with it
            a, b, ids, lens = retokenize(doc, self.tokenize, old, new, start, end, len(new_text) - (end - start))
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

    def source(self, uri: str) -> str:
        """The source a document was opened with ("document", "workspace", "history", ...)."""
        return self._docs[uri].source

    def text(self, uri: str) -> str:
        doc = self._docs[uri]
        return doc.text if isinstance(doc, TextDoc) else ""

    def tokens(self, uri: str) -> list[int]:
        with self.lock:
            doc = self._docs[uri]
            return doc.all_ids() if isinstance(doc, TextDoc) else list(doc.ids)

    @property
    def ntokens(self) -> int:
        return self._ntokens

    def bucket(self, level: int, key: int) -> list[int]:
        """uids of positions whose context of length LEVELS[level] hashes to `key`."""
        got = self._post[level].get(key)
        if got is None:
            big = self._big[level].get(key)
            return list(big) if big is not None else []
        return [got] if isinstance(got, int) else _uids(got)

    def resolve(
        self, uid: int, back: int, forward: int, current: str | None = None, cursor_uids: frozenset[int] = frozenset()
    ) -> Candidate:
        """Context before and continuation after the position `uid`, with its source label."""
        if uid & STATIC:
            doc = self._slots[(uid >> SLOT_SHIFT) & SLOT_MASK]
            p = uid & POS_MASK
            ids = doc.ids
            before = ids[max(0, p - back) : p][::-1]
            after = ids[p : p + forward]
            label = doc.source
            s0, s1 = doc.suffix_span
            if s0 <= p < s1:
                label = "suffix"
            return Candidate(before, after, label, self._rank(doc))
        chunk = self._where[uid]
        off = chunk.uids.index(uid)
        before = chunk.ids[max(0, off - back) : off][::-1]
        c = chunk.prev
        while len(before) < back and c is not None:
            need = back - len(before)
            before += c.ids[-need:][::-1]
            c = c.prev
        after = chunk.ids[off : off + forward]
        c = chunk.next
        while len(after) < forward and c is not None:
            after += c.ids[: forward - len(after)]
            c = c.next
        text_doc = chunk.doc
        if uid in cursor_uids:
            label = "suffix"
        elif text_doc.uri == current:
            label = "document"
        else:
            label = "workspace" if text_doc.source == "document" else text_doc.source
        return Candidate(before, after, label, self._rank(text_doc))

    def cursor_uids(self, uri: str, offset: int, around: int = 1) -> frozenset[int]:
        """uids of the tokens at the cursor (+-`around`): matches there draft the text after it."""
        with self.lock:
            doc = self._docs.get(uri)
            if not isinstance(doc, TextDoc):
                return frozenset()
            ti, _ = doc.token_at_char(min(max(0, offset), len(doc.text)))
            return frozenset(doc.slice(max(0, ti - around), ti + around + 1)[2])

    def stats(self) -> IndexStats:
        """Documents, tokens, and an estimate of the memory the index holds."""
        with self.lock:
            size = sum(sys.getsizeof(d) for d in (*self._post, *self._big)) + self._where.nbytes()
            for d in self._post:  # the key ints and the multi-entry buckets
                size += 32 * len(d)
                for v in d.values():
                    if not isinstance(v, int):
                        size += sys.getsizeof(v)
            for big in self._big:
                size += sum(32 + sys.getsizeof(v) + 32 * len(v) for v in big.values())
            size += 32 * len(self._where)  # the uid ints (shared by chunks and postings)
            for doc in self._docs.values():
                size += sys.getsizeof(doc.text) if isinstance(doc, TextDoc) else 0
                if isinstance(doc, TextDoc):
                    for c in doc.chunks:
                        size += 3 * sys.getsizeof(c.ids) + 32 * len(c.ids) + 120
                else:
                    size += sys.getsizeof(doc.ids) + 32 * len(doc.ids)
            return IndexStats(len(self._docs), self._ntokens, size)

    def rebuilt(self) -> NgramIndex:
        """A fresh index built from scratch from the same documents (tests, compaction)."""
        with self.lock:
            fresh = NgramIndex(self.tokenize, self.max_tokens, self.max_history)
            fresh._history_seq = self._history_seq
            for uri, doc in sorted(self._docs.items(), key=lambda kv: kv[1].stamp):
                if isinstance(doc, TextDoc):
                    fresh.open(uri, doc.text, doc.source, stamp=doc.stamp)
                else:
                    fresh.open_ids(uri, doc.ids, doc.source, stamp=doc.stamp)
                    fresh._docs[uri].suffix_span = doc.suffix_span  # type: ignore[union-attr]
            fresh._clock = self._clock
            return fresh

    def set_suffix_span(self, uri: str, start: int, end: int) -> None:
        doc = self._docs[uri]
        if isinstance(doc, IdsDoc):
            doc.suffix_span = (start, end)

    # --- internals: bookkeeping ------------------------------------------------------

    def _stamp(self, stamp: int | None) -> int:
        self._rank_cache = None
        if stamp is None:
            self._clock += 1
            return self._clock
        self._clock = max(self._clock, stamp)
        return stamp

    def _rank(self, doc: TextDoc | IdsDoc) -> int:
        """Recency rank among text documents, or among history entries; 0 = newest."""
        if self._rank_cache is None:
            ranks: dict[str, int] = {}
            for kind in ("text", "history"):
                docs = [
                    d
                    for d in self._docs.values()
                    if (isinstance(d, TextDoc) if kind == "text" else d.source == "history")
                ]
                docs.sort(key=lambda d: -d.stamp)
                for r, d in enumerate(docs):
                    ranks[d.uri] = r
            self._rank_cache = ranks
        return self._rank_cache.get(doc.uri, 0)

    def _evict(self, keep: str, incoming: int = 0) -> None:
        """Least recently used documents out until the tokens fit with `incoming` more,
        never `keep` nor the most recently used other text document (the one being edited:
        evicted by an accepted completion's history, it would be tokenized again at the next
        keystroke). Since no document holds over half the cap, those two always fit."""
        while self._ntokens + incoming > self.max_tokens:
            texts = [d for u, d in self._docs.items() if u != keep and isinstance(d, TextDoc)]
            active = max(texts, key=lambda d: d.stamp).uri if texts else None
            others = [d for u, d in self._docs.items() if u != keep and u != active]
            if not others:
                break
            victim = min(others, key=lambda d: d.stamp)
            log.info(
                "n-gram index over %d tokens: evicting %.200s (%d tokens)", self.max_tokens, victim.uri, victim.ntokens
            )
            self._remove_doc(victim.uri)

    def _remove_doc(self, uri: str) -> None:
        doc = self._docs.pop(uri, None)
        if doc is None:
            return
        self._rank_cache = None
        if isinstance(doc, IdsDoc):
            ids = doc.ids
            for p in range(len(ids)):
                for li, n in enumerate(LEVELS):
                    if p >= n:
                        self._unpost(li, hash(tuple(ids[p - n : p])), doc.base | p)
            del self._slots[doc.slot]
        else:
            ids, _, uids = doc.slice(0, doc.ntokens)
            self._post_range(ids, uids, 0, 0, len(ids), len(ids), add=False)
            self._where.drop_uids(uids)
        self._ntokens -= doc.ntokens
        if isinstance(doc, TextDoc):
            # No cycles left (chunk <-> chunk, chunk <-> document): reference counting frees
            # them now. Left to the cyclic collector, a closed 300k-token document made its
            # next full collection walk ~10k chunks while the event loop waited.
            for c in doc.chunks:
                c.prev = c.next = None
                self._where.drop_chunk(c)
            doc.chunks = []

    def _append(self, doc: IdsDoc, new: Sequence[int]) -> None:
        ids = doc.ids
        start = len(ids)
        if start + len(new) > POS_MASK:
            raise ValueError("id-only document too long")
        ids.extend(new)
        for p in range(start, len(ids)):
            for li, n in enumerate(LEVELS):
                if p >= n:
                    self._putpost(li, hash(tuple(ids[p - n : p])), doc.base | p)
        self._ntokens += len(new)

    def _putpost(self, li: int, key: int, uid: int) -> None:
        d = self._post[li]
        got = d.get(key)
        if got is None:
            bigs = self._big[li]
            big = bigs.get(key) if bigs else None
            if big is None:
                d[key] = uid
            else:
                big[uid] = None
        elif isinstance(got, int):
            d[key] = got.to_bytes(8, _ORDER) + uid.to_bytes(8, _ORDER)
        else:
            d[key] = got = got + uid.to_bytes(8, _ORDER)
            if len(got) > 8 * BIG_BUCKET:
                del d[key]
                self._big[li][key] = dict.fromkeys(_uids(got))

    def _unpost(self, li: int, key: int, uid: int) -> None:
        """Remove one uid: O(1), or O(BIG_BUCKET) from a small list."""
        d = self._post[li]
        got = d.get(key)
        if got is None:
            big = self._big[li][key]
            del big[uid]
            if len(big) <= BIG_BUCKET // 2:
                del self._big[li][key]
                d[key] = _packed(big)
        elif isinstance(got, int):
            del d[key]
        else:
            i = 8 * _uids(got).index(uid)
            got = got[:i] + got[i + 8 :]
            d[key] = _uids(got)[0] if len(got) == 8 else got

    def _post_range(
        self, ids: list[int], uids: list[int], base: int, lo: int, hi: int, full_hi: int, add: bool
    ) -> None:
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
                op(li, hash(tuple(ids[p - n : p])), uid)

    # --- internals: text documents -------------------------------------------------------

    def _insert_text_tokens(self, doc: TextDoc, ids: list[int], lens: list[int]) -> None:
        uids = list(range(self._next_uid, self._next_uid + len(ids)))
        self._next_uid += len(ids)
        prev: Chunk | None = None
        for i in range(0, len(ids), CHUNK_TARGET):
            c = Chunk(ids[i : i + CHUNK_TARGET], lens[i : i + CHUNK_TARGET], uids[i : i + CHUNK_TARGET], doc)
            c.prev = prev
            if prev is not None:
                prev.next = c
            prev = c
            doc.chunks.append(c)
            doc.sizes.append(len(c.ids))
            doc.nchars.append(c.nchars)
            self._where.put(c)
        doc.changed()
        doc.ntokens = len(ids)
        self._ntokens += len(ids)
        self._post_range(ids, uids, 0, 0, len(ids), len(ids), add=True)

    def _splice(self, doc: TextDoc, a: int, b: int, new_ids: list[int], new_lens: list[int]) -> None:
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
        self._post_range(ids_old, uids_old[a - w0 :], w0, a - w0, hi_old - w0, b - w0, add=False)
        removed = uids_old[a - w0 : b - w0]
        new_uids = list(range(self._next_uid, self._next_uid + len(new_ids)))
        self._next_uid += len(new_ids)
        replace_tokens(doc, a, b, new_ids, new_lens, new_uids, removed, self._where)
        self._ntokens += len(new_ids) - (b - a)
        m = len(new_ids)
        hi_new = min(doc.ntokens, a + m + reach)
        ids_new, _, uids_new = doc.slice(w0, hi_new)
        self._post_range(ids_new, uids_new[a - w0 :], w0, a - w0, hi_new - w0, a + m - w0, add=True)
