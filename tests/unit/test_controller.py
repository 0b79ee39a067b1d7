"""The lookahead controller: cost model, acceptance model, choice of k, keystroke clock."""

from __future__ import annotations

import pytest

from speclsp.drafting.clock import KeystrokeClock
from speclsp.drafting.controller import (
    AcceptanceModel,
    CostAwareLookahead,
    CostModel,
    FixedLookahead,
    HeuristicLookahead,
    expected_accepted,
    parse_lookahead,
)
from speclsp.drafting.drafter import Draft

FLAT = {0: 0.100, 1: 0.101, 8: 0.110, 64: 0.200}  # a GPU-like table: k is almost free
STEEP = {0: 0.100, 1: 0.200, 8: 0.900, 64: 6.500}  # every drafted token costs a full pass


def draft(n: int, source: str = "document", match_len: int = 40, agreement: float = 1.0) -> Draft:
    return Draft(tokens=tuple(range(n)), source=source, match_len=match_len, agreement=(agreement,) * n)


def test_auto_lookahead_is_the_cost_aware_controller_and_baselines_remain():
    assert isinstance(parse_lookahead("auto"), CostAwareLookahead)
    assert isinstance(parse_lookahead("fixed:10"), FixedLookahead)
    assert isinstance(parse_lookahead("heuristic"), HeuristicLookahead)


def test_cost_is_interpolated_between_and_extrapolated_beyond_measured_points():
    c = CostModel({0: 0.1, 8: 0.2, 16: 0.4})
    assert c.cost(0) == 0.1 and c.cost(4) == pytest.approx(0.15) and c.cost(12) == pytest.approx(0.3)
    assert c.cost(32) == pytest.approx(0.8)  # last slope continued


def test_measured_steps_move_the_load_level_and_keep_the_shape():
    """A calibration taken under load: every real step is 4x faster. The whole curve
    comes down together, so the ratio between k = 0 and k = 8 is kept."""
    c = CostModel({0: 0.4, 8: 0.8})
    for _ in range(20):
        c.observe(0, 0.1)
    assert c.cost(0) == pytest.approx(0.1, rel=0.05)
    assert c.cost(8) == pytest.approx(0.2, rel=0.1)
    c.observe(0, 10.0)  # one stalled step moves the level at most 2x (weight 0.2)
    assert c.cost(0) < 0.15


def test_measured_steps_refine_the_shape_at_their_k():
    c = CostModel({0: 0.1, 8: 0.2})
    for _ in range(200):  # k = 8 really costs 0.3 while k = 0 costs 0.1
        c.observe(0, 0.1)
        c.observe(8, 0.3)
    assert c.cost(8) / c.cost(0) == pytest.approx(3.0, rel=0.15)
    c.observe(4, 0.2)  # a new point joins the table
    assert 4 in c.table and c.cost(0) <= c.cost(4) <= c.cost(8)


def test_expected_accepted_stops_at_the_first_rejection():
    assert expected_accepted([1.0, 1.0, 1.0], 2) == 2.0
    assert expected_accepted([0.5, 0.5], 2) == pytest.approx(0.5 + 0.25)
    assert expected_accepted([0.9], 0) == 0.0


def test_empty_draft_means_plain_decoding():
    assert CostAwareLookahead().choose_k(Draft()) == 0


def test_unlikely_draft_on_expensive_hardware_is_not_verified():
    ctl = CostAwareLookahead.calibrated(STEEP)
    assert ctl.choose_k(draft(16, source="workspace", match_len=2, agreement=0.6)) == 0


def test_cheap_verification_and_long_matches_draft_far():
    ctl = CostAwareLookahead.calibrated(FLAT)
    assert ctl.choose_k(draft(64, match_len=48)) >= 8
    # On steep hardware the same draft is verified only a little way.
    assert CostAwareLookahead.calibrated(STEEP).choose_k(draft(64, match_len=48)) < 8


def test_step_budget_caps_k_but_plain_decoding_is_always_allowed():
    ctl = CostAwareLookahead.calibrated(FLAT)
    d = draft(64)
    k = ctl.choose_k(d, step_budget_s=0.105)
    assert 0 < k and ctl.costs.cost(k) <= 0.105
    assert ctl.choose_k(d, step_budget_s=0.001) == 0


def test_rejections_teach_the_controller_to_draft_less_for_that_source():
    ctl = CostAwareLookahead.calibrated({0: 0.1, 1: 0.12, 8: 0.2, 64: 0.8})
    d = draft(32, source="workspace", match_len=10)
    before = ctl.choose_k(d)
    for _ in range(30):
        ctl.record(d, 8, 0, 0.2)
    assert ctl.choose_k(d) < before
    # Another source keeps its own estimate.
    assert ctl.choose_k(draft(32, source="document", match_len=10)) == before


def test_acceptances_teach_the_controller_to_draft_more():
    ctl = CostAwareLookahead.calibrated({0: 0.1, 1: 0.12, 8: 0.2, 64: 0.8})
    d = draft(64, source="history", match_len=5, agreement=0.8)
    before = ctl.choose_k(d)
    for _ in range(40):
        ctl.record(d, 16, 16, 0.25)
    assert ctl.choose_k(d) > before


def test_acceptance_model_updates_only_the_tokens_it_saw():
    m = AcceptanceModel(alpha=1.0)
    # One agreement bucket per token, so each token has its own estimate.
    d = Draft(tokens=(5, 6, 7, 8), source="document", match_len=40, agreement=(1.0, 0.95, 0.6, 0.8))
    prior3 = m.p(d, 3)
    m.observe(d, k=4, accepted=2)  # tokens 0, 1 accepted, token 2 rejected, token 3 unseen
    assert m.p(d, 0) == m.p(d, 1) == m.ceiling
    assert m.p(d, 2) == m.floor
    assert m.p(d, 3) == prior3


def test_split_votes_lower_the_prior():
    m = AcceptanceModel()
    assert m.p(draft(1, agreement=0.6), 0) < m.p(draft(1, agreement=1.0), 0)
    assert m.p(draft(1, match_len=2), 0) < m.p(draft(1, match_len=40), 0)


def test_controller_is_deterministic_given_its_inputs():
    def run():
        ctl = CostAwareLookahead.calibrated(FLAT)
        ks = []
        for i in range(50):
            d = draft(1 + i % 30, match_len=i % 40, agreement=0.5 + (i % 5) / 10)
            k = ctl.choose_k(d, 0.15)
            ctl.record(d, k, k // 2, 0.1 + k / 1000)
            ks.append(k)
        return ks

    assert run() == run()


# --- keystroke clock --------------------------------------------------------------------


def typed(clock: KeystrokeClock, uri: str, times: list[float]) -> None:
    for t in times:
        clock.on_edit(uri, t)


def test_fast_typing_gives_a_tight_step_budget_and_short_completions():
    clock = KeystrokeClock()
    typed(clock, "a", [i * 0.1 for i in range(20)])  # 100 ms per key
    now = 1.95
    assert clock.interval("a") == pytest.approx(0.1)
    assert clock.step_budget("a", now) == pytest.approx(0.08)
    assert clock.max_tokens("a", now) == clock.short_tokens


def test_pausing_gives_long_completions_and_the_full_step_budget():
    clock = KeystrokeClock()
    typed(clock, "a", [i * 0.1 for i in range(20)])
    last = 1.9
    assert clock.step_budget("a", last + 1.5) == clock.max_step_s
    mid = clock.max_tokens("a", last + 1.5)
    assert clock.short_tokens < mid < clock.long_tokens
    assert clock.max_tokens("a", last + 5.0) == clock.long_tokens


def test_pauses_do_not_count_as_typing_pace_and_documents_are_separate():
    clock = KeystrokeClock()
    typed(clock, "a", [0.0, 0.2, 5.0, 5.2])
    assert clock.interval("a") == pytest.approx(0.2)
    assert clock.interval("b") is None
    assert clock.step_budget("b", 5.3) == clock.max_step_s
    clock.forget("a")
    assert clock.interval("a") is None


def test_step_budget_never_drops_below_the_floor():
    clock = KeystrokeClock(min_step_s=0.05)
    typed(clock, "a", [i * 0.01 for i in range(10)])
    assert clock.step_budget("a", 0.095) == 0.05


def test_a_spoilt_calibration_is_corrected_by_real_steps():
    """A stalled calibration made drafting look 100x dearer than it is: the controller
    still verifies short drafts now and then, learns the true cost, and drafts again."""
    from speclsp.drafting.controller import CostAwareLookahead
    from speclsp.drafting.drafter import Draft

    true_cost = {k: 0.10 + 0.001 * k for k in range(65)}
    spoilt = {0: 0.10, 1: 10.0, 2: 10.0, 4: 10.0, 8: 10.0, 16: 10.0, 32: 10.0, 64: 10.0}
    ctl = CostAwareLookahead.calibrated(spoilt)
    draft = Draft(tokens=tuple(range(16)), source="document", match_len=12, agreement=(1.0,) * 16)
    chosen = []
    for _ in range(400):
        k = ctl.choose_k(draft)
        chosen.append(k)
        ctl.record(draft, k, k, true_cost[k])  # every drafted token is right
    assert chosen[0] == 0
    assert all(k >= 8 for k in chosen[-50:])


def test_a_table_whose_last_point_measured_cheaper_never_prices_longer_drafts_lower():
    """A probe where the 16-token pass timed below the one-token step (noise) made the
    extrapolation fall: k = 64 priced at a third of a step, and every draft looked free."""
    from speclsp.drafting.controller import CostModel

    costs = CostModel({0: 0.0995, 15: 0.0852})
    assert costs.cost(64) >= costs.cost(15) > 0.08
