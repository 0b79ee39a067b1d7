"""The workspace drafter: drafts from an n-gram index plus the request's own tokens.

At the first (longest) level with a hit, candidates come from the workspace index and from
a private per-request index (the prompt, and the generated tokens as they grow). For each
candidate the exact match is measured backwards, up to 64 tokens; each then votes for its
next token with an integer weight, source x recency x match length. The draft follows the
winning token while its share of the vote is at least `min_agreement`, and chains through
the index again when every candidate's text has run out.

Sources recorded in `Draft.source`: "suffix" (text after the cursor: the current document
at the cursor, or the FIM suffix part of the prompt), "document" (the current document),
"workspace" (other documents), "history" (earlier accepted completions), "prompt" and
"generated" (the current request's own tokens). Weights are integers so that sums are
exact and answers never depend on summation order; ties go to the lower token id, then a
fixed order of sources.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .drafter import MAX_DRAFT, NO_DRAFT, Draft
from .index import LEVELS, MAX_MATCH, NgramIndex
from .tokens import common_prefix_len

SOURCE_WEIGHT = {"suffix": 10, "document": 10, "generated": 10, "prompt": 8, "history": 7, "workspace": 6}
SOURCE_ORDER = ("suffix", "document", "generated", "prompt", "history", "workspace")  # tie-break


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
            m = common_prefix_len(rev, c.before)
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
