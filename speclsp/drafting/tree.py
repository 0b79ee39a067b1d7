"""Token trees: many drafted continuations, verified together in one forward.

A `DraftTree` is a trie of drafted tokens hanging under the pending token (the root,
index -1). Node i has a token, a parent (an earlier node, or -1), a share (its weight
among its siblings: how many of the matches that reached its parent continue with it,
weighed by source, recency and match length), the source that contributed most to it,
and the longest context match behind it. A chain is a tree whose every parent is the
node before it: the linear drafter's draft is the special case.

Three pure steps, no tensors:

    TrieBuilder.add(tokens, weight, ...)   merge candidate continuations into a trie
    DraftTree.select(indices)              the subtree the controller chose to verify
    accept_tree(tree, picks)               the longest root-to-leaf path on which every node
                                           is the model's greedy pick, and the bonus token

Greedy output is unchanged whatever tree is verified: a node is kept only if it is the
argmax at its parent, so the accepted path is exactly what one-token-at-a-time decoding
would have produced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .drafter import Draft


@dataclass(frozen=True)
class DraftTree:
    """Nodes in an order where every parent comes before its children."""

    tokens: tuple[int, ...] = ()
    parents: tuple[int, ...] = ()  # -1: a child of the pending token
    shares: tuple[float, ...] = ()  # weight among siblings, 0..1
    sources: tuple[str, ...] = ()
    match_lens: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def source(self) -> str:
        return self.sources[0] if self.sources else "none"

    @property
    def match_len(self) -> int:
        return self.match_lens[0] if self.match_lens else 0

    def is_chain(self) -> bool:
        return all(p == i - 1 for i, p in enumerate(self.parents))

    def depths(self) -> list[int]:
        """Depth of each node (a child of the root is at depth 1)."""
        d: list[int] = []
        for p in self.parents:
            d.append(1 if p < 0 else d[p] + 1)
        return d

    def width(self) -> int:
        """Leaves: how many distinct continuations the tree holds."""
        has_child = set(self.parents)
        return sum(1 for i in range(len(self)) if i not in has_child)

    def select(self, keep: Sequence[int]) -> DraftTree:
        """The subtree of nodes `keep` (ancestor-closed), renumbered in their order here."""
        keep = sorted(keep)
        new = {old: i for i, old in enumerate(keep)}
        parents = []
        for i in keep:
            p = self.parents[i]
            if p >= 0 and p not in new:
                raise ValueError(f"node {i}'s parent {p} is not kept")
            parents.append(new[p] if p >= 0 else -1)
        return DraftTree(
            tuple(self.tokens[i] for i in keep),
            tuple(parents),
            tuple(self.shares[i] for i in keep),
            tuple(self.sources[i] for i in keep),
            tuple(self.match_lens[i] for i in keep),
        )

    def chain(self) -> DraftTree:
        """The main branch: from the root, always the child with the largest share."""
        keep, at = [], -1
        kids = self.children()
        while kids.get(at):
            at = max(kids[at], key=lambda c: (self.shares[c], -c))
            keep.append(at)
        return self.select(keep)

    def children(self) -> dict[int, list[int]]:
        kids: dict[int, list[int]] = {}
        for i, p in enumerate(self.parents):
            kids.setdefault(p, []).append(i)
        return kids

    @classmethod
    def from_draft(cls, draft: Draft) -> DraftTree:
        """A linear draft as a one-branch tree."""
        n = len(draft.tokens)
        shares = tuple(draft.agreement[i] if i < len(draft.agreement) else 1.0 for i in range(n))
        return cls(tuple(draft.tokens), tuple(range(-1, n - 1)), shares, (draft.source,) * n, (draft.match_len,) * n)


NO_TREE = DraftTree()


def accept_tree(tree: DraftTree, picks: Sequence[int]) -> tuple[list[int], int]:
    """(accepted node indices root to leaf, bonus token) from the model's greedy picks.

    `picks[0]` is the model's pick after the pending token, `picks[i + 1]` its pick after
    node i (given node i's ancestors). Siblings carry distinct tokens, so at most one
    child matches each pick.
    """
    kids = tree.children()
    path: list[int] = []
    at, pick = -1, picks[0]
    while True:
        nxt = next((c for c in kids.get(at, ()) if tree.tokens[c] == pick), None)
        if nxt is None:
            return path, pick
        path.append(nxt)
        at, pick = nxt, picks[nxt + 1]


@dataclass
class _Node:
    token: int
    parent: int
    weight: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    match: int = 0
    children: dict[int, int] = field(default_factory=dict)  # token -> node index


class TrieBuilder:
    """Merges weighted candidate continuations into a trie (integer weights: exact sums)."""

    def __init__(self) -> None:
        self.nodes: list[_Node] = []
        self.roots: dict[int, int] = {}
        self.root_weight = 0

    def add(self, tokens: Sequence[int], weight: int, source: str, match_len: int, under: int = -1) -> None:
        """One candidate continuation with its vote weight, hung under node `under`."""
        if under < 0:
            self.root_weight += weight
        level = self.roots if under < 0 else self.nodes[under].children
        parent = under
        for t in tokens:
            i = level.get(t)
            if i is None:
                i = level[t] = len(self.nodes)
                self.nodes.append(_Node(t, parent))
            n = self.nodes[i]
            n.weight += weight
            n.by_source[source] = n.by_source.get(source, 0) + weight
            n.match = max(n.match, match_len)
            level, parent = n.children, i

    def main_leaf(self) -> tuple[int, int]:
        """(node, depth) at the end of the heaviest branch (-1, 0: empty)."""
        at, depth, level = -1, 0, self.roots
        while level:
            at = max(level.values(), key=lambda i: (self.nodes[i].weight, -self.nodes[i].token))
            level = self.nodes[at].children
            depth += 1
        return at, depth

    def tree(self, max_nodes: int) -> DraftTree:
        """The `max_nodes` nodes with the largest path share (product of shares from the
        root), best first: every prefix of the result is itself a tree."""
        import heapq

        tokens: list[int] = []
        parents: list[int] = []
        shares: list[float] = []
        sources: list[str] = []
        matches: list[int] = []
        heap: list[tuple[float, int, int, int, float]] = []  # (-path share, seq, node, new parent, share)
        seq = 0

        def push(level: dict[int, int], total: int, parent_new: int, parent_path: float) -> None:
            nonlocal seq
            for i in level.values():
                s = self.nodes[i].weight / total if total else 0.0
                heapq.heappush(heap, (-parent_path * s, seq, i, parent_new, s))
                seq += 1

        push(self.roots, sum(self.nodes[i].weight for i in self.roots.values()), -1, 1.0)
        while heap and len(tokens) < max_nodes:
            neg, _, i, parent_new, s = heapq.heappop(heap)
            n = self.nodes[i]
            me = len(tokens)
            tokens.append(n.token)
            parents.append(parent_new)
            shares.append(s)
            sources.append(max(n.by_source, key=lambda k: (n.by_source[k], k)))
            matches.append(n.match)
            push(n.children, sum(self.nodes[c].weight for c in n.children.values()), me, -neg)
        return DraftTree(tuple(tokens), tuple(parents), tuple(shares), tuple(sources), tuple(matches))
