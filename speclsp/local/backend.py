"""The local backend: a model in this process, its speculative engine and optional draft model.

Implements `speclsp.backend.Backend` over `engine.Engine`. The n-gram drafter comes from
the caller; with a draft model loaded, `drafter_kind` "model" or "hybrid" wraps it in a
`HybridDrafter` weighing the draft model against the n-grams with the controller's cost
and acceptance models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from ..backend import CancelToken, GenerationResult
from ..drafting.controller import CostAwareLookahead, LookaheadPolicy
from ..drafting.drafter import Drafter, NullDrafter, parse_drafter
from .draft_model import DraftModelDrafter, HybridDrafter
from .engine import Engine
from .model import LoadedModel, load, load_learned, save_learned

log = logging.getLogger(__name__)


class LocalBackend:
    """A loaded model (and draft model), one generation at a time."""

    def __init__(self, lm: LoadedModel, draft_lm: LoadedModel | None = None):
        self.lm = lm
        self.name = lm.name
        self.device = str(lm.device)
        self.dtype = lm.precision
        self.dtype_reason = lm.reason
        self.problem = ""  # a loaded model can always serve
        self.tokenizer = lm.tokenizer
        self.special_ids = dict(lm.fim)
        self.engine = Engine(lm)
        # Built now so that a draft model with another tokenizer fails at load, not later.
        # It lives as long as the backend: its KV cache and what it learnt carry over.
        self.model_drafter = DraftModelDrafter(draft_lm, lm) if draft_lm is not None else None
        self.drafter_kinds = ("ngram", "model", "hybrid") if self.model_drafter is not None else ("ngram",)
        self._auto: CostAwareLookahead | None = None

    def encode(self, text: str) -> list[int]:
        return self.lm.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.lm.decode(ids)

    def step_costs(self) -> dict[int, float]:
        return self.lm.step_costs()

    def calibrate_step(self) -> bool:
        """Time one more verify pass of the calibration; False once it is complete."""
        return self.lm.calibration.step()

    def calibrate(self, budget_s: float | None = None, max_pass_s: float | None = None) -> dict[int, float]:
        """Complete the calibration now (benchmarks and one-shot commands: they cannot wait
        for idle time); `budget_s`/`max_pass_s` None keep the server's limits."""
        cal = self.lm.calibration
        if max_pass_s is not None:
            cal.max_pass_s = max_pass_s
        return cal.run(budget_s)

    def learned(self) -> dict:
        """The tree controller's acceptance estimates from earlier runs (model.load_learned)."""
        return load_learned(self.lm)

    def save_learned(self, learned: dict) -> None:
        save_learned(self.lm, learned)

    def describe(self) -> str:
        return f"{self.device} ({self.dtype})"

    def close(self) -> None:
        """Nothing to release beyond memory (the process frees the model when it goes)."""

    def precision(self) -> dict[str, str]:
        """The precision of the weights and why (measured fastest on this CPU, asked for, ...)."""
        return {"dtype": self.dtype, "dtype_reason": self.dtype_reason}

    def stats(self) -> dict:
        """What the draft model did, if there is one (for `speclsp complete --json`)."""
        out: dict = dict(self.precision())
        if self.model_drafter is not None:
            out["draft_model"] = self.model_drafter.stats.to_dict()
        return out

    def speculation_drafter(
        self, ngram: Drafter | None, kind: str, policy: LookaheadPolicy | None, step_budget_s: float | None
    ) -> Drafter | None:
        """`ngram` itself for kind "ngram"; for "model" and "hybrid" a `HybridDrafter` over the
        draft model (and `ngram` for "hybrid")."""
        kind = parse_drafter(kind)
        if kind == "ngram" or ngram is None:
            return ngram
        if self.model_drafter is None:
            log.warning("drafter %r needs a draft model and none is loaded: drafting with n-grams only", kind)
            return ngram
        if isinstance(policy, CostAwareLookahead):
            lookahead = policy
        else:
            if self._auto is None:
                self._auto = CostAwareLookahead.calibrated(self.step_costs())
            lookahead = self._auto
        return HybridDrafter(
            self.model_drafter, ngram if kind == "hybrid" else None, lookahead, step_budget_s=step_budget_s
        )

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        drafter: Drafter | None = None,
        drafter_kind: str = "ngram",
        policy: LookaheadPolicy | None = None,
        deadline: float | None = None,
        cancel: CancelToken | None = None,
        on_text: Callable[[str], None] | None = None,
        stop_text: Callable[[str], int | None] | None = None,
        step_budget_s: float | None = None,
        stop: Sequence[str] = (),  # the engine checks `stop_text` after every step instead
    ) -> GenerationResult:
        return self.engine.generate(
            prompt_ids,
            max_new_tokens=max_new_tokens,
            drafter=self.speculation_drafter(drafter, drafter_kind, policy, step_budget_s) or NullDrafter(),
            policy=policy if drafter is not None else None,
            deadline=deadline,
            cancel=cancel,
            on_text=on_text,
            stop_text=stop_text,
            step_budget_s=step_budget_s,
        )


def load_backend(
    model: str | None,
    device: str | None,
    dtype: str | None,
    draft_model: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> LocalBackend:
    """Load the model (and the draft model) and wrap them."""
    lm = load(model, device=device, dtype=dtype, progress=progress)
    draft_lm = load(draft_model, device=device, dtype=dtype, progress=progress) if draft_model else None
    return LocalBackend(lm, draft_lm)
