"""Draft-model speculation: a small model of the same family drafts, the target verifies.

Two drafters behind the `Drafter` protocol (drafting/drafter.py):

    DraftModelDrafter   a second `LoadedModel` sharing the target's tokenizer drafts
                        greedily, token by token, while its confidence (softmax prob of its
                        argmax) stays above a threshold that is adjusted online (DISCO-like)
    HybridDrafter       per step, the n-gram draft (nearly free) or the draft model's, or
                        none: whichever has the higher expected tokens per second, counting
                        the target's verify cost (the controller's cost model) and the draft
                        model's own measured cost per token

The engine keeps only tokens equal to the target's argmax, so neither can change the
output, only the speed. No tensors here: the draft model is used through
`LoadedModel.prefill`, `forward` and `greedy_confidence` (model.py stays torch's one home).

The draft model's KV cache is kept in step with the sequence: each `propose` keeps the
longest common prefix of the cached ids and the new ids (across steps and across
requests, so a keystroke re-feeds only what changed; a rejected draft is cropped the same
way) and feeds the rest. What happened to the previous draft is read from the new ids
(how many drafted tokens the sequence now continues with), so no hook in the engine is
needed to learn from acceptance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from ..drafting.controller import DRAFT_MODEL_SOURCE, CostAwareLookahead
from ..drafting.drafter import MAX_DRAFT, NO_DRAFT, Draft, Drafter
from ..drafting.tokens import common_prefix_len
from .model import KVState, LoadedModel
from .registry import ModelError

log = logging.getLogger(__name__)


def check_vocab(draft: LoadedModel, target: LoadedModel) -> None:
    """Raise ModelError unless both tokenizers map every token string to the same id."""
    a, b = draft.tokenizer.get_vocab(), target.tokenizer.get_vocab()
    if a == b:
        return
    only_draft = len(a.keys() - b.keys())
    only_target = len(b.keys() - a.keys())
    moved = sum(1 for t in a.keys() & b.keys() if a[t] != b[t])
    raise ModelError(
        f"draft model {draft.name} does not share the tokenizer of {target.name} "
        f"({only_draft} tokens only in the draft's, {only_target} only in the target's, {moved} with other ids); "
        "use a smaller model of the same family (e.g. qwen2.5-coder-0.5b for qwen2.5-coder-1.5b)"
    )


@dataclass
class ConfidenceThreshold:
    """When to stop drafting: the draft model's confidence falls below `value`.

    DISCO-like, adjusted online from what the target accepted: a drafted token rejected
    means drafting went on too long (raise by `raise_by`); a draft accepted in full whose
    stopping point was also right (the token the draft model stopped at would have been
    accepted, or the draft stopped at its length cap) means it stopped too early (lower by
    `lower_by`). A full draft followed by a wrong stop token means the threshold did its
    job and stays. Kept within [lo, hi]. The start, 0.4, is transformers' default
    `assistant_confidence_threshold`.
    """

    value: float = 0.4
    lo: float = 0.05
    hi: float = 0.95
    raise_by: float = 0.04
    lower_by: float = 0.02

    def observe(self, drafted: int, accepted: int, stop_right: bool | None) -> None:
        """`accepted` of `drafted` tokens kept (and the one after them seen rejected if
        fewer); `stop_right`: whether the token drafting stopped at would have been kept
        (None: not seen, or stopped at the length cap)."""
        if accepted < drafted:
            self.value = min(self.hi, self.value + self.raise_by)
        elif stop_right is None or stop_right:
            self.value = max(self.lo, self.value - self.lower_by)


@dataclass
class DraftModelStats:
    proposals: int = 0
    forwards: int = 0  # draft-model forward passes
    fed_tokens: int = 0  # tokens fed to the draft model (catch-up + drafting)
    reused_tokens: int = 0  # cached tokens kept at the start of a proposal (prefix reuse)
    drafted: int = 0
    seconds: float = 0.0  # time spent in propose()
    observed: int = 0  # drafted tokens whose fate was seen in a later sequence
    accepted: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 4)
        return d


@dataclass
class _Pending:
    """The last proposal, to be scored against the next sequence."""

    base: int  # len(ids) when proposed
    tokens: tuple[int, ...]
    stop_token: int | None  # the argmax drafting stopped at (None: stopped at the cap)


class DraftModelDrafter:
    """Drafts with a smaller model of the target's family (the `Drafter` protocol).

    Keeps its own KV cache across steps and requests. Measures its own cost: `token_s`
    (seconds per single-token draft forward) and `prefill_token_s` (seconds per token of a
    long catch-up), exponential moving averages seeded by a short profile at construction,
    so a policy can weigh drafting against verifying (`draft_cost`, `catchup_cost`). Learns
    `acceptance_rate`, the chance that a drafted token is kept when the ones before it were.
    """

    source = DRAFT_MODEL_SOURCE

    def __init__(
        self,
        draft_lm: LoadedModel,
        target_lm: LoadedModel | None = None,
        *,
        threshold: ConfidenceThreshold | None = None,
        max_tokens: int = 16,
        acceptance_prior: float = 0.6,
        profile: bool = True,
    ):
        if target_lm is not None:
            check_vocab(draft_lm, target_lm)
        self.lm = draft_lm
        # A drafted id must exist in the target's embedding, or its verify pass would fail.
        self.id_limit = min(draft_lm.vocab_size, target_lm.vocab_size if target_lm is not None else draft_lm.vocab_size)
        self.kv = KVState()
        self.threshold = threshold or ConfidenceThreshold()
        self.max_tokens = min(max_tokens, MAX_DRAFT)
        self.acceptance_rate = acceptance_prior
        self.alpha = 0.1  # EMA weight of one observation (costs and acceptance)
        self.token_s = 0.0
        self.prefill_token_s = 0.0
        self.stats = DraftModelStats()
        self._pending: _Pending | None = None
        if profile:
            self.profile()

    # --- cost ------------------------------------------------------------------------

    def profile(self, context: int = 32, repeats: int = 3) -> None:
        """Seed `token_s` and `prefill_token_s` with a few timed forwards (fastest of each)."""
        lm = self.lm
        ids = (lm.encode("def f(x):\n    return x + 1\n" * 16) or [0]) * 8
        kv = KVState()
        lm.forward(kv, ids[:context], last_only=True)
        one, many = float("inf"), float("inf")
        for _ in range(repeats):
            lm.crop(kv, context)
            t0 = time.perf_counter()
            lm.forward(kv, ids[context : context + 1], last_only=True)
            lm.sync()
            one = min(one, time.perf_counter() - t0)
            lm.crop(kv, context)
            t0 = time.perf_counter()
            lm.forward(kv, ids[context : context + 64], last_only=True)
            lm.sync()
            many = min(many, (time.perf_counter() - t0) / 64)
        self.token_s, self.prefill_token_s = one, many
        log.info("draft model %s: %.1f ms per draft token, %.2f ms per catch-up token", lm.name, one * 1e3, many * 1e3)

    def draft_cost(self, n: int) -> float:
        """Seconds to draft n tokens once the cache is caught up (one forward per token)."""
        return n * self.token_s

    def gap(self, ids: Sequence[int]) -> int:
        """Tokens of `ids` the cache does not hold yet (what a proposal must feed first)."""
        return len(ids) - min(common_prefix_len(self.kv.ids, ids), len(ids) - 1)

    def catchup_cost(self, ids: Sequence[int]) -> float:
        """Seconds to feed a long gap, beyond the one or two tokens every step feeds."""
        return max(0, self.gap(ids) - 2) * self.prefill_token_s

    def _timed_forward(self, ids: Sequence[int]) -> tuple[int, float]:
        lm = self.lm
        t0 = time.perf_counter()
        logits = lm.forward(self.kv, ids, last_only=True)
        tok, conf = lm.greedy_confidence(logits, self.id_limit)
        dt = time.perf_counter() - t0  # .tolist() has synchronised
        n = len(ids)
        if n <= 2:
            self.token_s += self.alpha * (dt - self.token_s)
        elif n >= 16:
            self.prefill_token_s += self.alpha * (dt / n - self.prefill_token_s)
        self.stats.forwards += 1
        self.stats.fed_tokens += n
        return tok[-1], conf[-1]

    # --- the Drafter protocol --------------------------------------------------------

    def begin(self, prompt_ids: Sequence[int]) -> None:
        self._pending = None  # a new sequence: the last draft says nothing about it

    def reset(self) -> None:
        """Forget the cache (the next proposal prefills from scratch); learning is kept."""
        self.kv = KVState()
        self._pending = None

    def propose(self, ids: Sequence[int], max_tokens: int) -> Draft:
        max_tokens = min(max_tokens, self.max_tokens)
        if max_tokens <= 0 or not ids:
            return NO_DRAFT
        t0 = time.perf_counter()
        try:
            return self._propose(list(ids), max_tokens)
        except BaseException:
            self.kv = KVState()  # a half-done forward leaves the cache unknown
            raise
        finally:
            self.stats.seconds += time.perf_counter() - t0

    def _propose(self, ids: list[int], max_tokens: int) -> Draft:
        lm, kv = self.lm, self.kv
        self._score_pending(ids)
        t0 = time.perf_counter()
        fed_in = lm.prefill(kv, ids[:-1])  # a cold or far-behind cache: fed in chunks
        assert fed_in is not None  # None only when cancelled or past a deadline: neither is given
        keep, forwards = fed_in
        fed = len(ids) - 1 - keep
        if fed >= 16:
            lm.sync()
            self.prefill_token_s += self.alpha * ((time.perf_counter() - t0) / fed - self.prefill_token_s)
        self.stats.reused_tokens += keep
        self.stats.proposals += 1
        self.stats.forwards += forwards
        self.stats.fed_tokens += fed
        tok, conf = self._timed_forward(ids[-1:])
        tokens: list[int] = []
        confs: list[float] = []
        stop_token: int | None = None
        while True:
            if conf < self.threshold.value:
                stop_token = tok
                break
            tokens.append(tok)
            confs.append(conf)
            if len(tokens) >= max_tokens or tok in lm.end_ids:
                break  # the last token is not fed: its successor is not needed
            tok, conf = self._timed_forward([tok])
        self.stats.drafted += len(tokens)
        self._pending = _Pending(len(ids), tuple(tokens), stop_token)
        if not tokens:
            return NO_DRAFT
        return Draft(tokens=tuple(tokens), source=self.source, match_len=0, agreement=tuple(confs))

    def _score_pending(self, ids: list[int]) -> None:
        """Learn from the previous proposal, if `ids` continues the sequence it was for."""
        p, self._pending = self._pending, None
        if p is None or len(ids) <= p.base or common_prefix_len(self.kv.ids[: p.base], ids) < p.base:
            return  # a different sequence (another request), or nothing new yet
        tail = ids[p.base :]  # what the target produced after the proposal point
        m = common_prefix_len(tail, p.tokens)
        seen = min(len(tail), len(p.tokens))
        rejected = m < len(p.tokens) and m < len(tail)
        self.stats.observed += m + rejected
        self.stats.accepted += m
        for hit in [1.0] * m + [0.0] * rejected:
            self.acceptance_rate += self.alpha * (hit - self.acceptance_rate)
        if rejected:
            self.threshold.observe(len(p.tokens), m, None)
        elif m == len(p.tokens) == seen:
            stop_right = None
            if p.stop_token is not None and len(tail) > m:
                stop_right = tail[m] == p.stop_token
            self.threshold.observe(len(p.tokens), m, stop_right)


@dataclass(frozen=True)
class ModelPlan:
    """How many tokens to ask the draft model for, and the tokens per second expected."""

    n: int
    rate: float


def plan_model_draft(
    acceptance: float,
    token_s: float,
    catchup_s: float,
    verify_cost,
    room: int,
    max_tokens: int,
    step_budget_s: float | None = None,
) -> ModelPlan:
    """Best draft length n for the draft model, before drafting (pure, unit-tested).

    rate(n) = (1 + E[n]) / (verify(n) + n * token_s + catchup_s * (1 + E[n]) / room),
    E[n] = sum_{i<=n} acceptance^i. A long catch-up (cold cache) is a one-off cost, so it is
    spread over the `room` tokens it can still pay off in. n = 0 (rate 0) when nothing fits
    the step budget.
    """
    best = ModelPlan(0, 0.0)
    total, run = 0.0, 1.0
    room = max(1, room)
    for n in range(1, max_tokens + 1):
        run *= acceptance
        total += run
        step = verify_cost(n) + n * token_s
        if step_budget_s is not None and step > step_budget_s:
            break
        rate = (1.0 + total) / (step + catchup_s * (1.0 + total) / room)
        if rate > best.rate:
            best = ModelPlan(n, rate)
    return best


@dataclass
class HybridDrafter:
    """Per step: the n-gram draft, the draft model's, or none (the `Drafter` protocol).

    The n-gram drafter is asked first (microseconds); the lookahead controller values its
    draft as the best (1 + E[accepted | k]) / verify_cost(k). The draft model is run only
    when its planned rate (`plan_model_draft`: its learned acceptance, its measured cost
    per token, the same verify cost table) beats that, asking for the planned length; its
    confidence threshold may stop it sooner. The engine's policy then picks k as usual. With
    `ngram=None` this is the draft-model-only drafter. Every `probe_every`-th step without a
    model draft runs the model anyway (2 tokens), so a low acceptance estimate can recover.
    """

    model: DraftModelDrafter
    ngram: Drafter | None = None
    lookahead: CostAwareLookahead = field(default_factory=CostAwareLookahead)
    step_budget_s: float | None = None
    probe_every: int = 16
    probe_tokens: int = 2
    choices: dict[str, int] = field(default_factory=lambda: {"ngram": 0, "model": 0, "none": 0, "probe": 0})
    _steps: int = 0

    def begin(self, prompt_ids: Sequence[int]) -> None:
        if self.ngram is not None:
            self.ngram.begin(prompt_ids)
        self.model.begin(prompt_ids)

    def propose(self, ids: Sequence[int], max_tokens: int) -> Draft:
        ngram = self.ngram.propose(ids, max_tokens) if self.ngram is not None else NO_DRAFT
        k_ng, rate_ng = self.lookahead.plan(ngram, self.step_budget_s)
        m = self.model
        plan = plan_model_draft(
            m.acceptance_rate,
            m.token_s,
            m.catchup_cost(ids),
            self.lookahead.costs.cost,
            room=max_tokens + 1,
            max_tokens=min(max_tokens, m.max_tokens),
            step_budget_s=self.step_budget_s,
        )
        self._steps += 1
        n, kind = plan.n, "model"
        if not (n and plan.rate > rate_ng):
            n, kind = 0, "ngram" if k_ng else "none"
            if (
                self.probe_every and self._steps % self.probe_every == 0 and max_tokens > 0 and m.gap(ids) <= 8
            ):  # probe a warm cache only: a cold one costs a prefill
                n, kind = min(self.probe_tokens, max_tokens), "probe"
        if n:
            draft = m.propose(ids, n)
            if draft.tokens:
                self.choices[kind] += 1
                return draft
            kind = "ngram" if k_ng else "none"
        self.choices[kind] += 1
        return ngram
