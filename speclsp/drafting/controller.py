"""Lookahead policies: how many drafted tokens to verify at each step.

The engine asks a drafter for the longest draft it has (cheap), then asks a policy how
much of it to verify (`choose_k`), runs the verify pass, and reports what happened
(`record`). Policies are pure Python and deterministic given their inputs, so they are
unit-tested without a model. Whatever k a policy picks, the output is unchanged: only
the number of forward passes differs.

This file is one concern (how much of a draft, chain or tree, each verify pass takes: the
cost model, the acceptance estimates and the policies built on them) at ~440 lines.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

from .drafter import MAX_DRAFT, Draft

if TYPE_CHECKING:
    from .tree import DraftTree


class LookaheadPolicy(Protocol):
    @property
    def name(self) -> str: ...

    def choose_k(self, draft: Draft, step_budget_s: float | None = None) -> int:
        """How many of `draft.tokens` to verify in the next forward (0..len(draft))."""

    def record(self, draft: Draft, k: int, accepted: int, seconds: float) -> None:
        """The verify pass over k drafted tokens kept `accepted` of them and took `seconds`."""


@runtime_checkable
class TreePolicy(LookaheadPolicy, Protocol):
    """A policy that sizes token trees too (`TreeLookahead`)."""

    max_nodes: int

    def plan_tree(self, tree: DraftTree, step_budget_s: float | None = None) -> tuple[list[int], float]:
        """The nodes of `tree` to verify in the next forward, and their expected gain."""

    def record_tree(self, tree: DraftTree, path: list[int], seconds: float) -> None:
        """The verify pass over `tree` accepted the nodes on `path` and took `seconds`."""


@dataclass
class FixedLookahead:
    """Always verify up to `k` drafted tokens (transformers' prompt lookup uses 10)."""

    k: int = 10

    @property
    def name(self) -> str:
        return f"fixed:{self.k}"

    def choose_k(self, draft: Draft, step_budget_s: float | None = None) -> int:
        return min(self.k, len(draft.tokens))

    def record(self, draft: Draft, k: int, accepted: int, seconds: float) -> None:
        pass


@dataclass
class HeuristicLookahead:
    """transformers' "heuristic" schedule: +2 after a fully accepted draft, else -1."""

    k: int = 10
    min_k: int = 1
    max_k: int = MAX_DRAFT
    name: str = "heuristic"

    def choose_k(self, draft: Draft, step_budget_s: float | None = None) -> int:
        return min(self.k, len(draft.tokens))

    def record(self, draft: Draft, k: int, accepted: int, seconds: float) -> None:
        if k == 0:
            return
        if accepted == k:
            self.k = min(self.max_k, self.k + 2)
        else:
            self.k = max(self.min_k, self.k - 1)


def parse_lookahead(spec: str) -> LookaheadPolicy:
    """`fixed:K`, `heuristic`, `auto` (the cost- and keystroke-aware controller over chains)
    or `tree` (the same over token trees)."""
    spec = spec.strip().lower()
    if spec.startswith("fixed:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"bad lookahead {spec!r}: expected fixed:K with an integer K") from None
        if not 0 <= k <= MAX_DRAFT:
            raise ValueError(f"bad lookahead {spec!r}: K must be in 0..{MAX_DRAFT}")
        return FixedLookahead(k)
    if spec == "heuristic":
        return HeuristicLookahead()
    if spec == "auto":
        return CostAwareLookahead()
    if spec == "tree":
        return TreeLookahead()
    raise ValueError(f"bad lookahead {spec!r}: expected fixed:K, heuristic, auto or tree")


# --- the cost- and keystroke-aware controller ------------------------------------------

# Seconds per verify pass over 1 + k tokens, measured once on a CPU (2 cores, bf16) with
# Qwen2.5 0.5B after a 512-token prefix: a prior shape only, used until a probe or a
# calibration of the machine arrives.
DEFAULT_COSTS: dict[int, float] = {0: 0.140, 1: 0.142, 8: 0.170, 64: 0.355}


@dataclass
class CostModel:
    """Seconds per verify pass as a function of k: a calibrated shape times a load level.

    The calibration table gives the shape: how a pass grows with k. Between measured
    points it is interpolated linearly, beyond the last one extrapolated with the last
    slope, and made non-decreasing. On a shared machine every pass slows down together
    when other work runs (a calibration taken under load can measure k = 0 at several
    times its quiet cost), so real steps mostly move one number, the load level
    (`cost(k) = scale * shape(k)`), and refine the shape at k slowly. A calibration taken
    under load therefore still ranks k correctly, and stops mattering once steps arrive.
    """

    table: dict[int, float] = field(default_factory=lambda: dict(DEFAULT_COSTS))
    alpha: float = 0.2  # weight of one slower measurement in the load level
    shape_alpha: float = 0.1  # weight of one measurement in the shape at its k
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.table:
            raise ValueError("empty cost table")
        self.table = {int(k): float(v) for k, v in self.table.items()}
        self._keys = sorted(self.table)
        self._rebuild()

    def _interp(self, k: int) -> float:
        ks, t = self._keys, self.table
        if k in t:
            return t[k]
        if len(ks) == 1:
            return t[ks[0]]
        i = bisect.bisect_left(ks, k)
        if i == 0:
            return t[ks[0]]
        if i == len(ks):
            # Extrapolate with the last segment's slope, never a falling one: a table whose
            # last point measured cheaper (noise) must not price longer drafts lower still.
            k0, k1 = ks[-2], ks[-1]
            return t[k1] + max(0.0, t[k1] - t[k0]) * (k - k1) / (k1 - k0)
        k0, k1 = ks[i - 1], ks[i]
        c = t[k0] + (t[k1] - t[k0]) * (k - k0) / (k1 - k0)
        return max(c, 1e-6)

    def _rebuild(self) -> None:
        # Verifying more tokens never costs less. Timing noise only ever adds time, so
        # where a smaller k measured dearer than a larger one, the smaller (later) figure
        # wins: a running minimum from the right gives a non-decreasing curve.
        mono = [self._interp(k) for k in range(MAX_DRAFT + 1)]
        for k in range(MAX_DRAFT - 1, -1, -1):
            mono[k] = min(mono[k], mono[k + 1])
        self._mono = mono

    def recalibrate(self, table: Mapping[int, float]) -> None:
        """A new calibration (measured while idle): its shape replaces what is known, and
        the load level starts again from it."""
        if table:
            self.table = {int(k): float(v) for k, v in table.items()}
            self._keys = sorted(self.table)
            self.scale = 1.0
            self._rebuild()

    def shape(self, k: int) -> float:
        if 0 <= k <= MAX_DRAFT:
            return self._mono[k]
        return max(self._interp(k), self._mono[-1])

    def cost(self, k: int) -> float:
        return self.scale * self.shape(k)

    def observe(self, k: int, seconds: float) -> None:
        if seconds <= 0:
            return
        ratio = seconds / self.cost(k)
        # Timing noise only ever adds time, so a faster step is trusted more than a
        # slower one, and one stalled step (GC, another process) counts at most 2x.
        a = 0.75 if ratio < 1 else self.alpha
        self.scale *= (1 - a) + a * min(ratio, 2.0)
        # What the load level does not explain refines the shape at k.
        if k not in self.table:
            self.table[k] = self._interp(k)
            bisect.insort(self._keys, k)
        old = self.table[k]
        new = self.table[k] = (1 - self.shape_alpha) * old + self.shape_alpha * min(seconds / self.scale, 2 * old)
        for kk in self._keys:  # what k costs, every larger k costs at least
            if kk > k and self.table[kk] < new:
                self.table[kk] = new
        self._rebuild()


def match_bucket(match_len: int) -> int:
    """0: <4 tokens, 1: <8, 2: <16, 3: <32, 4: 32+ tokens of matched context."""
    return sum(match_len >= b for b in (4, 8, 16, 32))


def agreement_bucket(agreement: float) -> int:
    """0: <0.7 of the vote, 1: <0.9, 2: <1, 3: unanimous."""
    return sum(agreement >= b for b in (0.7, 0.9, 1.0))


# Prior P(accept) per match bucket before any observation: longer matches of the user's own
# text continue more often. Deliberately modest: over-trusting a cold model wastes passes.
PRIOR_BY_MATCH = (0.30, 0.45, 0.60, 0.70, 0.80)
# A draft model's drafts carry its softmax confidence as `agreement`, which is roughly
# calibrated, so their prior follows the confidence bucket (<0.7, <0.9, <1, 1) instead.
PRIOR_BY_CONFIDENCE = (0.45, 0.80, 0.93, 0.97)
DRAFT_MODEL_SOURCE = "draft-model"
# The tree controller's prior per draft source and match bucket, where a held-out count
# says the flat table above is too modest: the share of verify passes in which the model
# continued into a node's likeliest child, counted over the edit replay of 24 commits of
# pallets/click with the default model (int8), each shrunk toward PRIOR_BY_MATCH by ten
# pseudo-observations and kept non-decreasing. A text's own continuation after the cursor
# (`suffix`) and a match elsewhere in the document are right far more often than a
# one-token re-anchor. Sources and buckets not listed (few observations) keep the flat
# table. Measured on the replay of pallets/itsdangerous: `docs/benchmarks.md`.
TREE_PRIOR: dict[str, tuple[float, ...]] = {
    "anchor": (0.33,),
    "document": (0.61, 0.72, 0.78, 0.85),
    "suffix": (0.59, 0.74, 0.85, 0.94, 0.94),
}


def tree_prior(source: str, mb: int) -> float:
    """`TreeAcceptance`'s estimate for a (source, match bucket) before any observation."""
    fitted = TREE_PRIOR.get(source, ())
    return fitted[mb] if mb < len(fitted) else PRIOR_BY_MATCH[mb]


@dataclass
class AcceptanceModel:
    """P(next drafted token accepted | all before it were), per (source, match, agreement).

    Learned online by exponential moving averages; an unseen key starts at its prior,
    which depends on the match length bucket and is scaled down for split votes.
    """

    alpha: float = 0.1
    floor: float = 0.02
    ceiling: float = 0.98
    _p: dict[tuple[str, int, int], float] = field(default_factory=dict)

    def key(self, draft: Draft, i: int) -> tuple[str, int, int]:
        a = draft.agreement[i] if i < len(draft.agreement) else 1.0
        return draft.source, match_bucket(draft.match_len), agreement_bucket(a)

    def prior(self, key: tuple[str, int, int]) -> float:
        source, mb, ab = key
        if source == DRAFT_MODEL_SOURCE:
            return PRIOR_BY_CONFIDENCE[ab]
        return PRIOR_BY_MATCH[mb] * (0.7, 0.85, 0.95, 1.0)[ab]

    def p(self, draft: Draft, i: int) -> float:
        key = self.key(draft, i)
        return self._p.get(key, self.prior(key))

    def observe(self, draft: Draft, k: int, accepted: int) -> None:
        """Tokens 0..accepted-1 were accepted; token `accepted` (if < k) was rejected."""
        for i in range(min(k, accepted + 1)):
            key = self.key(draft, i)
            old = self._p.get(key, self.prior(key))
            hit = 1.0 if i < accepted else 0.0
            self._p[key] = min(self.ceiling, max(self.floor, (1 - self.alpha) * old + self.alpha * hit))


def expected_accepted(ps: list[float], k: int) -> float:
    """E[accepted | verify k] = sum_{i<k} prod_{j<=i} p_j (acceptance stops at the first miss)."""
    total, run = 0.0, 1.0
    for p in ps[:k]:
        run *= p
        total += run
    return total


@dataclass
class CostAwareLookahead:
    """Pick k maximising expected tokens per second: (1 + E[accepted | k]) / cost(k).

    The 1 is the token every verify pass yields anyway. k = 0 (plain decoding) when the
    draft is empty or when no k pays for its extra cost, so a workspace without useful
    n-grams is never slower than greedy. A k whose predicted cost exceeds the step budget
    (from the keystroke clock) is never chosen; k = 0 always is allowed.
    """

    costs: CostModel = field(default_factory=CostModel)
    acceptance: AcceptanceModel = field(default_factory=AcceptanceModel)
    max_k: int = MAX_DRAFT
    name: str = "auto"
    # Every `explore_every`-th step with a draft probes twice the chosen k (at least
    # `explore_k`), so a cost table spoilt by a noisy calibration is corrected by real
    # steps instead of keeping k small forever. Deterministic: a step counter, not a coin.
    explore_every: int = 16
    explore_k: int = 2
    _steps: int = 0

    @classmethod
    def calibrated(cls, table: Mapping[int, float], **kw: Any) -> Self:
        """From a calibration (`LoadedModel.step_costs()`: {k: seconds per verify pass})."""
        return cls(costs=CostModel(dict(table)), **kw)

    def plan(self, draft: Draft, step_budget_s: float | None = None) -> tuple[int, float]:
        """(best k, its expected tokens per second); no exploration, no step counted.

        k = 0 gives 1 / cost(0): what plain decoding yields. Used by `choose_k`, and by
        drafters that weigh drafts against each other (draft_model.HybridDrafter).
        """
        n = min(len(draft.tokens), self.max_k)
        best_k, best = 0, 1.0 / self.costs.cost(0)
        if n == 0:
            return best_k, best
        ps = [self.acceptance.p(draft, i) for i in range(n)]
        total, run = 0.0, 1.0
        for k in range(1, n + 1):
            run *= ps[k - 1]
            total += run
            c = self.costs.cost(k)
            if step_budget_s is not None and c > step_budget_s:
                break  # cost grows with k: no larger k fits either
            rate = (1.0 + total) / c
            if rate > best:
                best_k, best = k, rate
        return best_k, best

    def choose_k(self, draft: Draft, step_budget_s: float | None = None) -> int:
        n = min(len(draft.tokens), self.max_k)
        if n == 0:
            return 0
        best_k, _ = self.plan(draft, step_budget_s)
        self._steps += 1
        if self.explore_every and best_k < n and self._steps % self.explore_every == 0:
            k = min(n, max(self.explore_k, 2 * best_k))
            if step_budget_s is None or self.costs.cost(k) <= step_budget_s:
                return k
        return best_k

    def record(self, draft: Draft, k: int, accepted: int, seconds: float) -> None:
        self.costs.observe(k, seconds)
        if k:
            self.acceptance.observe(draft, k, accepted)


# --- token trees -------------------------------------------------------------------------

TREE_MAX_NODES = 64  # nodes verified in one forward at most (the calibrated cost range)


@dataclass
class TreeAcceptance:
    """P(the model's next token is among a node's drafted children), per (source, match bucket).

    A child's chance is that times its share of the vote, so siblings never add up to
    more than one. Learnt fast (a long verbatim match is nearly always accepted, and a
    request should find that out within a few steps) and kept across requests and
    processes (`to_dict`/`update`, saved beside the cost calibration).
    """

    alpha: float = 0.25
    floor: float = 0.02
    ceiling: float = 0.99
    _q: dict[tuple[str, int], float] = field(default_factory=dict)

    def q(self, source: str, match_len: int) -> float:
        mb = match_bucket(match_len)
        return self._q.get((source, mb), tree_prior(source, mb))

    @staticmethod
    def _match(tree, i: int, depth: int) -> int:
        # A node d tokens deep continues a match that is d - 1 tokens longer than the one
        # it was drafted from, if its ancestors are accepted: deep in a verbatim copy the
        # next token is likelier than at its start.
        return tree.match_lens[i] + depth - 1

    def path_probs(self, tree) -> list[float]:
        """P(node accepted) for every node of a `DraftTree`: the product down its path."""
        out: list[float] = []
        for i, (p, d) in enumerate(zip(tree.parents, tree.depths())):
            up = 1.0 if p < 0 else out[p]
            out.append(up * self.q(tree.sources[i], self._match(tree, i, d)) * tree.shares[i])
        return out

    def observe(self, tree, path: list[int]) -> None:
        """After a verify pass over `tree`: at every node on the accepted path (and the
        root), did the model continue into one of its children?"""
        kids = tree.children()
        depths = tree.depths()
        at = -1
        for step in [*path, None]:
            below = kids.get(at)
            if below:
                main = max(below, key=lambda c: (tree.shares[c], -c))
                key = (tree.sources[main], match_bucket(self._match(tree, main, depths[main])))
                old = self._q.get(key, tree_prior(*key))
                hit = 1.0 if step is not None else 0.0
                self._q[key] = min(self.ceiling, max(self.floor, (1 - self.alpha) * old + self.alpha * hit))
            if step is None:
                break
            at = step

    def to_dict(self) -> dict[str, float]:
        return {f"{s}|{mb}": round(p, 4) for (s, mb), p in sorted(self._q.items())}

    def update(self, saved: Mapping[str, float]) -> None:
        for key, p in saved.items():
            source, _, mb = key.rpartition("|")
            try:
                self._q[(source, int(mb))] = min(self.ceiling, max(self.floor, float(p)))
            except ValueError:
                continue


@dataclass
class TreeLookahead(CostAwareLookahead):
    """The cost-aware controller for token trees: which nodes to verify in one forward.

    The drafter proposes a large tree; this keeps the n nodes most likely to be accepted
    (an ancestor-closed set, since a node is never likelier than its parent), with n
    maximising (1 + E[accepted]) / cost(n) within the step budget. E[accepted] is the sum
    of the kept nodes' path probabilities. With one branch this is the chain controller's
    rule; where trees cannot be verified (the engine says so) it behaves as `auto`.
    """

    name: str = "tree"
    tree_acceptance: TreeAcceptance = field(default_factory=TreeAcceptance)
    max_nodes: int = TREE_MAX_NODES

    def plan_tree(self, tree, step_budget_s: float | None = None) -> tuple[list[int], float]:
        """(the nodes to verify, best first; expected tokens per second)."""
        best_n, best = 0, 1.0 / self.costs.cost(0)
        if not len(tree):
            return [], best
        probs = self.tree_acceptance.path_probs(tree)
        order = sorted(range(len(tree)), key=lambda i: (-probs[i], i))[: self.max_nodes]
        total = 0.0
        for n, i in enumerate(order, start=1):
            total += probs[i]
            c = self.costs.cost(n)
            if step_budget_s is not None and c > step_budget_s:
                break
            rate = (1.0 + total) / c
            if rate > best:
                best_n, best = n, rate
        return order[:best_n], best

    def record_tree(self, tree, path: list[int], seconds: float) -> None:
        self.costs.observe(len(tree), seconds)
        if len(tree):
            self.tree_acceptance.observe(tree, path)
