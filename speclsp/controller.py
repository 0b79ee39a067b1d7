"""Lookahead policies: how many drafted tokens to verify at each step.

The engine asks a drafter for the longest draft it has (cheap), then asks a policy how
much of it to verify (`choose_k`), runs the verify pass, and reports what happened
(`record`). Policies are pure Python and deterministic given their inputs, so they are
unit-tested without a model. Whatever k a policy picks, the output is unchanged: only
the number of forward passes differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .drafter import MAX_DRAFT, Draft


class LookaheadPolicy(Protocol):
    name: str

    def choose_k(self, draft: Draft, step_budget_s: float | None = None) -> int:
        """How many of `draft.tokens` to verify in the next forward (0..len(draft))."""

    def record(self, draft: Draft, k: int, accepted: int, seconds: float) -> None:
        """The verify pass over k drafted tokens kept `accepted` of them and took `seconds`."""


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
    """`fixed:K`, `heuristic`, or `auto` (the cost- and keystroke-aware controller)."""
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
        # Until the cost-aware controller exists, auto means a fixed lookahead of 10.
        return FixedLookahead(10)
    raise ValueError(f"bad lookahead {spec!r}: expected fixed:K, heuristic or auto")
