"""Token recycling: drafts for novel text from the model's own recent top-k picks.

Every verify pass computes a distribution at each position it feeds; the runner-up tokens
are usually thrown away. `Successors` keeps, for each token, the top-k tokens (and their
probabilities) the model predicted after it the last time it was fed. Where the workspace
has nothing to copy, a small tree grown from the pending token through that table is often
right for a token or two (after `self.` the model keeps predicting the same attributes).
The controller learns how often (source "recycle") and verifies none of it when that does
not pay, so plain decoding is the worst case. After Luo et al., "Turning Trash into
Treasure: Accelerating Inference of Large Language Models with Token Recycling" (2024).
"""

from __future__ import annotations

from collections.abc import Sequence

from .tree import NO_TREE, DraftTree

WIDTHS = (4, 2, 1, 1)  # children per node at each depth: a 4-wide root, then narrowing


class Successors:
    """token -> ((next token, probability), ...) from the latest pass that fed the token."""

    def __init__(self, k: int = 4, max_tokens: int = 200_000):
        self.k = k
        self.max_tokens = max_tokens
        self._next: dict[int, tuple[tuple[int, float], ...]] = {}

    def __len__(self) -> int:
        return len(self._next)

    def observe(self, tokens: Sequence[int], top: Sequence[Sequence[tuple[int, float]]]) -> None:
        """`top[i]`: the model's top-k (token, probability) after `tokens[i]` in context."""
        if len(self._next) > self.max_tokens:
            self._next.clear()  # a bound, not a cache policy: it refills within a few steps
        for t, picks in zip(tokens, top):
            self._next[t] = tuple(picks[: self.k])

    def tree(self, last: int, max_nodes: int = 32, widths: Sequence[int] = WIDTHS) -> DraftTree:
        """Breadth first from `last`: at depth d, each node's `widths[d]` likeliest successors."""
        tokens: list[int] = []
        parents: list[int] = []
        shares: list[float] = []
        frontier = [(-1, last)]
        for width in widths:
            nxt = []
            for parent, tok in frontier:
                for t, p in self._next.get(tok, ())[:width]:
                    if len(tokens) >= max_nodes:
                        break
                    tokens.append(t)
                    parents.append(parent)
                    shares.append(p)
                    nxt.append((len(tokens) - 1, t))
            frontier = nxt
        if not tokens:
            return NO_TREE
        n = len(tokens)
        return DraftTree(tuple(tokens), tuple(parents), tuple(shares), ("recycle",) * n, (0,) * n)
