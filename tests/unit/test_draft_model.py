"""Draft-model speculation and the hybrid drafter (speclsp/draft_model.py).

Lossless against greedy in float32 with tiny random target and draft models of other
seeds and sizes; the draft model's KV cache reused across requests; the confidence
threshold moving with acceptance; the hybrid's choice with fake costs; the CLI flags.

The tiny model as built ties its embedding and head (scaled x8), so it only ever repeats
its last token and any draft model agrees with it. Here the target gets an untied random
head and louder layers, so its output varies with the context; a "close" draft model (the
target with noise added to its head) then agrees often but not always, a "far" one
(another seed and size, its own head) almost never. (A one-layer build of the target's
seed agrees with it no more than the far one does: the argmax over a random head is that
sensitive.)
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speclsp.drafting.controller import CostAwareLookahead, CostModel, FixedLookahead
from speclsp.drafting.drafter import Draft, PromptLookupDrafter
from speclsp.local.draft_model import (
    ConfidenceThreshold,
    DraftModelDrafter,
    HybridDrafter,
    ModelPlan,
    check_vocab,
    plan_model_draft,
)
from speclsp.local.engine import Engine
from speclsp.local.registry import ModelError

N_NEW = 24


def _contextual(lm, head_seed: int, like=None, noise: float = 0.0):
    """Untie the head (random, or `like` plus noise) and double the layers' outputs."""
    import torch

    from speclsp.local.tiny import SPECIAL_TOKENS

    m = lm.model
    with torch.no_grad():
        for name, p in m.model.layers.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                p.mul_(2.0)
        g = torch.Generator().manual_seed(head_seed)
        shape = m.lm_head.weight.shape
        w = torch.randn(shape, generator=g) if like is None else like.clone()
        if noise:
            w += noise * torch.randn(shape, generator=g)
        w[[lm.tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]] = 0.0  # never end at once
        m.lm_head.weight = torch.nn.Parameter(w)
    return lm


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(target, {"close": draft, "far": draft}), float32 on CPU, one thread (tiny models
    gain nothing from threads and lose a lot to a busy machine)."""
    import torch

    from speclsp.local import model, tiny

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("draft-models")
    load = lambda d: model.load(str(d), device="cpu", dtype="float32", warm_up=False)  # noqa: E731
    target_dir = tiny.build(root / "target", hidden=64, layers=2, seed=0)
    target = _contextual(load(target_dir), 100)
    close = _contextual(load(target_dir), 101, like=target.model.lm_head.weight, noise=0.4)
    far = _contextual(load(tiny.build(root / "far", hidden=32, layers=1, seed=1)), 102)
    yield target, {"close": close, "far": far}
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def engine(models):
    return Engine(models[0])


def greedy(engine: Engine, prompt, n=N_NEW):
    engine.reset()
    return engine.generate(prompt, max_new_tokens=n).token_ids


prompts = st.lists(st.integers(min_value=7, max_value=400), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=prompts,
    which=st.sampled_from(["close", "far", "self"]),
    mode=st.sampled_from(["model:fixed", "model:auto", "hybrid:auto", "hybrid:fixed"]),
    k=st.integers(1, 16),
    threshold=st.sampled_from([0.0, 0.4, 0.9]),
    warm=st.booleans(),
)
def test_draft_model_output_equals_greedy(models, engine, prompt, which, mode, k, threshold, warm):
    target, drafts = models
    expected = greedy(engine, prompt)
    draft_lm = target if which == "self" else drafts[which]
    dm = DraftModelDrafter(draft_lm, target, threshold=ConfidenceThreshold(value=threshold), profile=False)
    dm.token_s, dm.prefill_token_s = 0.001, 0.0001
    if warm:  # a cache left by another request: only the common prefix may be kept
        dm.propose(prompt[: len(prompt) // 2] + [9, 10, 11], 4)
    kind, la = mode.split(":")
    policy = FixedLookahead(k) if la == "fixed" else CostAwareLookahead()
    drafter = HybridDrafter(
        dm,
        PromptLookupDrafter() if kind == "hybrid" else None,
        policy if isinstance(policy, CostAwareLookahead) else CostAwareLookahead(),
    )
    engine.reset()
    got = engine.generate(prompt, max_new_tokens=N_NEW, drafter=drafter, policy=policy)
    assert got.token_ids == expected
    if which == "self" and threshold == 0.0 and kind == "model" and la == "fixed" and len(expected) > 2:
        assert got.stats.accepted > 0 and got.stats.forwards < len(expected)


def test_close_draft_is_accepted_often_and_far_draft_rarely(models, engine):
    target, drafts = models
    rng = random.Random(1)
    rates = {}
    for which, lm in drafts.items():
        dm = DraftModelDrafter(
            lm, target, threshold=ConfidenceThreshold(value=0.0, lo=0.0, raise_by=0.0), profile=False
        )
        drafted = accepted = 0
        for _ in range(4):
            prompt = [rng.randrange(7, 400) for _ in range(12)]
            expected = greedy(engine, prompt)
            engine.reset()
            r = engine.generate(prompt, max_new_tokens=N_NEW, drafter=dm, policy=FixedLookahead(4))
            assert r.token_ids == expected
            drafted, accepted = drafted + r.stats.drafted, accepted + r.stats.accepted
        rates[which] = accepted / drafted
    # Both kinds of step (accepted and rejected drafts) are exercised by the lossless test.
    assert rates["close"] > 0.3 > 0.05 > rates["far"]


def test_draft_cache_is_reused_across_requests_and_cropped_on_rejection(models, engine):
    target, drafts = models
    dm = DraftModelDrafter(drafts["close"], target, threshold=ConfidenceThreshold(value=0.0), profile=False)
    rng = random.Random(2)
    prompt = [rng.randrange(7, 400) for _ in range(30)]
    engine.reset()
    first = engine.generate(prompt, max_new_tokens=N_NEW, drafter=dm, policy=FixedLookahead(8))
    assert 0 < first.stats.accepted < first.stats.drafted  # some drafts were rejected
    seq = prompt + first.token_ids
    # The next request extends the last one (the user typed two more tokens): only the
    # tokens after the last verified step are fed; rejected draft tokens are cropped.
    prompt2 = seq + [42, 43]
    fed, reused = dm.stats.fed_tokens, dm.stats.reused_tokens
    dm.begin(prompt2)
    dm.propose(prompt2, 1)
    assert dm.stats.reused_tokens - reused >= len(seq) - 9  # the last step yields at most k + 1 = 9
    assert dm.stats.fed_tokens - fed <= 12
    assert dm.kv.ids[: len(prompt2)] == prompt2
    engine.reset()
    assert engine.generate(prompt2, max_new_tokens=8, drafter=dm, policy=FixedLookahead(8)).token_ids == greedy(
        engine, prompt2, 8
    )
    # A request for another file shares nothing: the cache is cropped and refilled.
    other = [rng.randrange(7, 400) for _ in range(20)]
    engine.reset()
    assert engine.generate(other, max_new_tokens=8, drafter=dm, policy=FixedLookahead(8)).token_ids == greedy(
        engine, other, 8
    )
    assert dm.kv.ids[: len(other)] == other


def test_confidence_threshold_moves_with_acceptance():
    t = ConfidenceThreshold(value=0.4, raise_by=0.05, lower_by=0.02)
    t.observe(drafted=5, accepted=2, stop_right=None)  # a drafted token was rejected
    assert t.value == pytest.approx(0.45)
    t.observe(drafted=3, accepted=3, stop_right=True)  # stopped where the next token was right
    assert t.value == pytest.approx(0.43)
    t.observe(drafted=3, accepted=3, stop_right=None)  # stopped at the length cap
    assert t.value == pytest.approx(0.41)
    t.observe(drafted=3, accepted=3, stop_right=False)  # stopped exactly where it should
    assert t.value == pytest.approx(0.41)
    for _ in range(100):
        t.observe(1, 0, None)
    assert t.value == t.hi
    for _ in range(100):
        t.observe(1, 1, None)
    assert t.value == t.lo


def test_threshold_rises_for_a_bad_draft_model_and_falls_for_a_perfect_one(models, engine):
    target, drafts = models
    rng = random.Random(3)
    bad = DraftModelDrafter(drafts["far"], target, profile=False)
    perfect = DraftModelDrafter(target, target, max_tokens=4, profile=False)
    for _ in range(3):
        prompt = [rng.randrange(7, 400) for _ in range(10)]
        for dm in (bad, perfect):
            engine.reset()
            engine.generate(prompt, max_new_tokens=N_NEW, drafter=dm, policy=FixedLookahead(16))
    assert bad.threshold.value > 0.4 and bad.acceptance_rate < 0.5
    assert perfect.threshold.value < 0.4 and perfect.acceptance_rate > 0.9
    assert perfect.stats.accepted == perfect.stats.observed > 0


def test_draft_model_with_another_tokenizer_is_refused(models, tmp_path):
    from speclsp.local import model, tiny

    target, _ = models
    other = model.load(str(tiny.build(tmp_path / "other", vocab=300)), device="cpu", dtype="float32", warm_up=False)
    with pytest.raises(ModelError, match="does not share the tokenizer"):
        check_vocab(other, target)
    with pytest.raises(ModelError):
        DraftModelDrafter(other, target, profile=False)


# --- the hybrid's choice, with fake costs --------------------------------------------------


class FakeModel:
    """The draft model as the hybrid sees it: learnt acceptance, cost per token, a draft."""

    source = "draft-model"

    def __init__(self, acceptance: float, token_s: float, gap: int = 1, max_tokens: int = 16):
        self.acceptance_rate, self.token_s, self.max_tokens, self._gap = acceptance, token_s, max_tokens, gap
        self.calls: list[int] = []

    def begin(self, prompt_ids):
        pass

    def gap(self, ids):
        return self._gap

    def catchup_cost(self, ids):
        return max(0, self._gap - 2) * 0.001

    def propose(self, ids, max_tokens):
        self.calls.append(max_tokens)
        return Draft(tuple(range(100, 100 + max_tokens)), "draft-model", 0, (0.9,) * max_tokens)


class FakeNgram:
    def __init__(self, draft: Draft):
        self.draft = draft

    def begin(self, prompt_ids):
        pass

    def propose(self, ids, max_tokens):
        return Draft(self.draft.tokens[:max_tokens], self.draft.source, self.draft.match_len, self.draft.agreement)


# Verify costs like a CPU: 100 ms for one token, +2 ms per drafted token.
def lookahead() -> CostAwareLookahead:
    return CostAwareLookahead(costs=CostModel({0: 0.100, 64: 0.228}), explore_every=0)


LONG_MATCH = Draft(tuple(range(10, 26)), "document", 40, (1.0,) * 16)  # the user's own text, 40 tokens matched


def test_hybrid_prefers_a_strong_ngram_draft_to_a_costly_draft_model():
    model = FakeModel(acceptance=0.7, token_s=0.040)
    h = HybridDrafter(model, FakeNgram(LONG_MATCH), lookahead(), probe_every=0)
    d = h.propose([1, 2, 3], 32)
    assert d.source == "document" and model.calls == [] and h.choices["ngram"] == 1


def test_hybrid_runs_a_cheap_draft_model_when_ngrams_have_nothing():
    model = FakeModel(acceptance=0.8, token_s=0.005)
    h = HybridDrafter(model, FakeNgram(Draft()), lookahead(), probe_every=0)
    d = h.propose([1, 2, 3], 32)
    assert d.source == "draft-model" and h.choices["model"] == 1
    n = model.calls[0]
    assert 4 <= n <= 16  # long enough to pay, capped by the model drafter's max_tokens
    assert n == plan_model_draft(0.8, 0.005, 0.0, h.lookahead.costs.cost, 33, 16).n


def test_hybrid_drafts_nothing_when_the_draft_model_does_not_pay():
    model = FakeModel(acceptance=0.3, token_s=0.090)  # nearly as dear as the target, rarely right
    h = HybridDrafter(model, FakeNgram(Draft()), lookahead(), probe_every=4)
    out = [h.propose([1, 2, 3], 32) for _ in range(8)]
    assert [bool(d.tokens) for d in out] == [False, False, False, True] * 2  # only the probes draft
    assert model.calls == [2, 2] and h.choices == {"ngram": 0, "model": 0, "none": 6, "probe": 2}
    cold = FakeModel(acceptance=0.3, token_s=0.090, gap=500)
    h = HybridDrafter(cold, None, lookahead(), probe_every=1)
    assert not h.propose([1, 2, 3], 32).tokens and cold.calls == []  # no probe into a cold cache


def test_hybrid_takes_the_draft_model_over_a_weak_ngram_draft():
    weak = Draft((5, 6), "workspace", 2, (0.6, 0.6))  # short match, split vote
    model = FakeModel(acceptance=0.9, token_s=0.004)
    h = HybridDrafter(model, FakeNgram(weak), lookahead(), probe_every=0)
    assert h.propose([1, 2, 3], 32).source == "draft-model"


def test_model_plan_counts_draft_cost_catch_up_and_budget():
    cost = lookahead().costs.cost
    free = plan_model_draft(0.8, 0.0, 0.0, cost, room=64, max_tokens=16)
    dear = plan_model_draft(0.8, 0.05, 0.0, cost, room=64, max_tokens=16)
    assert free.n > dear.n > 0 and free.rate > dear.rate
    # rate(n) = (1 + E[n]) / (verify(n) + n * token_s)
    e = sum(0.8**i for i in range(1, dear.n + 1))
    assert dear.rate == pytest.approx((1 + e) / (cost(dear.n) + dear.n * 0.05))
    # A cold cache (a 2 s prefill) is not worth it for 4 tokens, but is for 400.
    assert plan_model_draft(0.8, 0.005, 2.0, cost, room=4, max_tokens=3).rate < 1 / cost(0)
    assert plan_model_draft(0.8, 0.005, 2.0, cost, room=400, max_tokens=16).rate > 1 / cost(0)
    # The step budget caps the draft length.
    assert plan_model_draft(0.8, 0.005, 0.0, cost, room=64, max_tokens=16, step_budget_s=0.13).n <= 4
    assert plan_model_draft(0.8, 0.005, 0.0, cost, room=64, max_tokens=16, step_budget_s=0.05) == ModelPlan(0, 0.0)


def test_plan_agrees_with_choose_k():
    la = lookahead()
    for d in (LONG_MATCH, Draft((5, 6), "workspace", 2, (0.6, 0.6)), Draft()):
        assert la.plan(d)[0] == la.choose_k(d)


# --- configuration -----------------------------------------------------------------------


def test_cli_needs_a_draft_model_for_model_drafting(tmp_path):
    src = tmp_path / "a.py"
    src.write_text("def f(x):\n    return x\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "speclsp",
            "complete",
            str(src),
            "--line",
            "1",
            "--character",
            "4",
            "--drafter",
            "hybrid",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "--drafter hybrid needs --draft-model" in r.stderr


def test_completer_hybrid_completion_equals_greedy(models):
    from speclsp.completion.completer import Completer, CompletionRequest
    from speclsp.local.backend import LocalBackend

    target, drafts = models
    completer = Completer(LocalBackend(target, drafts["close"]))
    text = "def get_value(self, key):\n    return self.value\n\ndef get_key(self, value):\n    "
    base = CompletionRequest("a.py", text, 4, 4, max_tokens=16, speculate=False)
    plain = completer.complete(base)
    # At this size the draft model costs as much as the target and the hybrid rightly
    # declines it; pretend it is nearly free so that it drafts.
    completer.backend.model_drafter.token_s = completer.backend.model_drafter.prefill_token_s = 1e-7
    for kind in ("ngram", "model", "hybrid"):
        req = CompletionRequest("a.py", text, 4, 4, max_tokens=16, drafter=kind, lookahead="fixed:8")
        assert completer.complete(req).token_ids == plain.token_ids
    assert completer.backend.model_drafter.stats.proposals > 0
    with pytest.raises(ValueError, match="bad drafter"):
        completer.complete(CompletionRequest("a.py", text, 4, 4, drafter="oracle"))
