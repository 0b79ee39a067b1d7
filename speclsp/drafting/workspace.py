"""The workspace drafter: drafts from an n-gram index plus the request's own tokens.

At the first (longest) level with a hit, candidates come from the workspace index and from
a private per-request index (the prompt, and the generated tokens as they grow). For each
candidate the exact match is measured backwards, up to 64 tokens; each then votes for its
next token with an integer weight, source x recency x match length. The draft follows the
winning token while its share of the vote is at least `min_agreement`, and chains through
the index again when every candidate's text has run out.

Sources recorded in `Draft.source`: "suffix" (text after the cursor: the current document
at the cursor, or the FIM suffix part of the prompt), "document" (the current document),
"workspace" (other documents), "history" (earlier completions, text edits removed), "prompt" and
"generated" (the current request's own tokens). Weights are integers so that sums are
exact and answers never depend on summation order; ties go to the lower token id, then a
fixed order of sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from .drafter import MAX_DRAFT, NO_DRAFT, Draft
from .index import LEVELS, MAX_MATCH, NgramIndex
from .tokens import common_prefix_len
from .tree import NO_TREE, DraftTree, TrieBuilder

SOURCE_WEIGHT = {"suffix": 10, "document": 10, "generated": 10, "prompt": 8, "history": 7, "workspace": 6}
ANCHOR_WINDOW = 256  # tokens before the cursor searched for a one-token re-anchor
ANCHOR_MAX = 16  # re-anchor candidates at most
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
    _suffix: tuple[int, int] = (0, 0)
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
        self._suffix = (0, 0)
        self._generated = 0
        if self.index_prompt:
            own.open_ids("prompt", prompt, "prompt")
            if self.fim_suffix_id is not None and self.fim_middle_id is not None:
                try:
                    s0 = prompt.index(self.fim_suffix_id) + 1
                    s1 = prompt.index(self.fim_middle_id, s0)
                    own.set_suffix_span("prompt", s0, s1)
                    self._suffix = (s0, s1)
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
        indexes = self._indexes()
        with _locked(indexes):
            return self._lookup(indexes, tail, limit)

    def _lookup(self, indexes: list[NgramIndex], tail: Sequence[int], limit: int):
        live = self._candidates(indexes, tail, limit, per_index=False)
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
                for w, _m, label, _ in live:
                    by_source[label] = by_source.get(label, 0) + w
                source = max(
                    by_source, key=lambda s: (by_source[s], -SOURCE_ORDER.index(s) if s in SOURCE_ORDER else -99)
                )
                match_len = max(m for _, m, _, _ in live)
            toks.append(tok)
            agr.append(share)
        if not toks:
            return None
        return toks, agr, source, match_len, exhausted

    def _candidates(
        self, indexes: list[NgramIndex], tail: Sequence[int], limit: int, per_index: bool
    ) -> list[tuple[int, int, str, list[int]]]:
        """(weight, match length, label, continuation) of every occurrence of the longest
        indexed context that ends `tail`. `per_index`: each index at its own longest level
        (so the request's own tokens are heard even where the workspace matches longer),
        and a context too common to draft from keeps its most recent occurrences."""
        found: list[tuple[NgramIndex, int]] = []
        level: dict[int, int] = {}  # id(index) -> the context length its candidates matched
        if per_index:
            for ix in indexes:
                for li in range(len(LEVELS) - 1, -1, -1):
                    if len(tail) >= LEVELS[li] and (got := ix.bucket(li, hash(tuple(tail[-LEVELS[li] :])))):
                        found += [(ix, u) for u in got[-self.max_candidates :]]
                        level[id(ix)] = LEVELS[li]
                        break
        else:  # the longest level with a hit in any index, all indexes' hits there
            for li in range(len(LEVELS) - 1, -1, -1):
                if len(tail) < LEVELS[li]:
                    continue
                key = hash(tuple(tail[-LEVELS[li] :]))
                for ix in indexes:
                    found += [(ix, u) for u in ix.bucket(li, key)]
                    level[id(ix)] = LEVELS[li]
                if found:
                    break
        if not found or (not per_index and len(found) > self.max_candidates):
            return []
        rev = list(tail[::-1][:MAX_MATCH])
        live: list[tuple[int, int, str, list[int]]] = []  # (weight, match, label, after)
        for ix, uid in found:
            c = ix.resolve(uid, MAX_MATCH, limit, self._uri, self._cursor_uids)
            m = common_prefix_len(rev, c.before)
            if m < level[id(ix)] or not c.after:
                continue  # a hash collision, or nothing follows
            live.append((SOURCE_WEIGHT.get(c.label, 5) * _recency(c.rank) * m, m, c.label, c.after))
        return live

    def propose_tree(self, ids: Sequence[int], max_nodes: int, max_depth: int = MAX_DRAFT) -> DraftTree:
        """Every candidate continuation of the context, merged into a trie (`tree.py`).

        Candidates come from each index at its own longest matching level, so the
        request's own tokens (prompt, FIM suffix, generated) always take part beside the
        workspace. Where the heaviest branch runs out of text it chains through the index
        again, as `propose` does. Where nothing matches at two tokens or more, the last
        token is re-anchored in the text after the cursor and the text just before it
        (`anchor`): after the model leaves a draft it often rejoins that text at once.
        """
        max_depth = min(max_depth, MAX_DRAFT)
        if max_nodes <= 0 or max_depth <= 0 or not ids:
            return NO_TREE
        self._sync_generated(ids)
        tail = list(ids[-MAX_MATCH:])
        indexes = self._indexes()
        trie = TrieBuilder()
        under, depth = -1, 0
        for _ in range(self.max_chain):
            with _locked(indexes):
                live = self._candidates(indexes, tail, max_depth - depth, per_index=True)
            if not live and under < 0:
                live = self._anchors(ids, max_depth)
            live.sort(key=lambda c: -c[0])
            for w, m, label, after in live[: self.max_candidates]:
                trie.add(after, w, label, m, under=under)
            leaf, d = trie.main_leaf()
            if not live or leaf < 0 or d >= max_depth or trie.nodes[leaf].children:
                break
            # The heaviest branch ran out of text (e.g. the end of what was generated):
            # chain through the index from there, like an LZ77 copy.
            path = []
            at = leaf
            while at >= 0:
                path.append(trie.nodes[at].token)
                at = trie.nodes[at].parent
            new_tail = (list(ids) + path[::-1])[-MAX_MATCH:]
            if new_tail == tail:
                break
            tail, under, depth = new_tail, leaf, d
        return trie.tree(max_nodes)

    def _anchors(self, ids: Sequence[int], limit: int) -> list[tuple[int, int, str, list[int]]]:
        """Continuations after each occurrence of the last token in the FIM suffix, the
        last `ANCHOR_WINDOW` prompt tokens and the generated ones: one-token matches."""
        t, n = ids[-1], self._prompt_len
        s0, s1 = self._suffix
        out = []
        for lo, hi, label in (
            (s0, s1, "suffix"),
            (max(0, n - ANCHOR_WINDOW), n, "prompt"),
            (n, len(ids) - 1, "generated"),
        ):
            for j in range(lo, hi - 1):
                if ids[j] == t:
                    out.append((SOURCE_WEIGHT.get(label, 5), 1, "anchor", list(ids[j + 1 : min(j + 1 + limit, hi)])))
                    if len(out) >= ANCHOR_MAX:
                        return out
        return out

    def _indexes(self) -> list[NgramIndex]:
        return [self._own] + ([self.index] if self.index is not None else [])

    def _sync_generated(self, ids: Sequence[int]) -> None:
        n = len(ids) - self._prompt_len
        if n < self._generated or "generated" not in self._own:
            self.begin(list(ids))  # not a continuation of the prompt we began with
            return
        if n > self._generated:
            self._own.append_ids("generated", list(ids[self._prompt_len + self._generated :]))
            self._generated = n


@contextmanager
def _locked(indexes: list[NgramIndex]):
    """Hold every index's lock (a didChange on the server thread waits for the lookup)."""
    with ExitStack() as stack:
        for ix in indexes:
            stack.enter_context(ix.lock)
        yield


def _recency(rank: int) -> int:
    return 8 >> min(rank, 3)  # 8, 4, 2, 1
