"""`speclsp bench replay` replays drafting against greedy output without verify passes; its
forward counts must be the engine's own for the same drafter and lookahead, or its tables
say nothing."""

from __future__ import annotations

import pytest

from speclsp.bench.replay import Costs, copy_length, replay
from speclsp.completion.completer import Completer, CompletionRequest
from speclsp.drafting.controller import parse_lookahead
from speclsp.drafting.drafter import PromptLookupDrafter
from speclsp.local.backend import LocalBackend

DOC = (
    "def area(width, height):\n    return width * height\n\n\n"
    "def perimeter(width, height):\n    return 2 * (width + height)\n\n\n"
    "def describe(width, height):\n    "
)


@pytest.mark.parametrize("system", ["chain:fixed:10", "lookup:fixed:10", "chain:fixed:3"])
def test_replayed_forwards_are_the_engines_forwards(tiny_lm, system):
    completer = Completer(LocalBackend(tiny_lm))
    lines = DOC.split("\n")
    req = CompletionRequest("shapes.py", DOC, len(lines) - 1, len(lines[-1]), max_tokens=40)
    prompt, _ = completer.prompt_for(req)
    engine = completer.backend.engine
    engine.reset()
    out = list(engine.generate(prompt.ids, max_new_tokens=40).token_ids)
    assert len(out) == 40

    kind, spec = system.split(":", 1)
    drafter = PromptLookupDrafter() if kind == "lookup" else completer.drafter_for(req)
    engine.reset()
    r = engine.generate(prompt.ids, max_new_tokens=40, drafter=drafter, policy=parse_lookahead(spec))
    assert list(r.token_ids) == out  # float32: lossless
    assert r.stats.accepted > 0  # drafts were taken: the count below is not the trivial one

    context = list(prompt.ids) + [-1] + list(completer.backend.encode(DOC))
    tally = replay(completer, (req, list(prompt.ids), context), out, system, Costs({0: 1.0, 64: 2.0}), {})
    assert tally.forwards == r.stats.forwards
    assert tally.nodes == r.stats.drafted


def test_copy_bounds_find_the_longest_copy():
    import numpy as np

    hay = np.array([5, 1, 2, 3, 9, 1, 2, 4, 4])
    assert copy_length(hay, None, [1, 2, 3, 7]) == 3
    assert copy_length(hay, 9, [1, 2, 3]) == 2  # after a 9 only "1 2 4" follows
    assert copy_length(hay, 8, [1, 2]) == 0
    assert copy_length(hay, None, []) == 0


def test_the_told_controller_knows_the_first_level_and_estimates_the_rest():
    from speclsp.bench.replay import ToldNext
    from speclsp.drafting.controller import TreeAcceptance
    from speclsp.drafting.tree import DraftTree

    # Two continuations under the pending token: 7 8 (share 0.75) and 9 (0.25).
    tree = DraftTree((7, 9, 8), (-1, -1, 0), (0.75, 0.25, 1.0), ("document",) * 3, (3, 3, 3))
    plain = TreeAcceptance().path_probs(tree)
    told = ToldNext()
    assert told.path_probs(tree) == plain  # told nothing: the plain estimates

    told.next_token = 9  # the model takes the minority branch
    got = told.path_probs(tree)
    assert got[1] == told.ceiling and got[0] == told.floor
    assert got[2] == pytest.approx(told.floor * plain[2] / plain[0])  # 8 given 7: as estimated
    assert got[2] < got[1]


def test_the_engine_bench_takes_its_repeats_in_turn_across_systems(tiny_lm, monkeypatch):
    """Best-of-N timing is fair only if a burst of load cannot land on every run of one
    system: the repeats go round the systems (greedy, A, B, greedy, A, B)."""
    from speclsp.bench import engine as bench

    order = []
    real = bench.run_system

    def watched(completer, system, *args, **kw):
        order.append(system)
        return real(completer, system, *args, **kw)

    monkeypatch.setattr(bench, "run_system", watched)
    completer = Completer(LocalBackend(tiny_lm))
    lines = DOC.split("\n")
    case = bench.Case("shapes", "edit-replay", "shapes.py", DOC, len(lines) - 1, len(lines[-1]))
    rows = bench.measure(completer, [case], ("greedy", "ws:auto", "ws:tree"), 12, repeats=2)
    assert order == ["greedy", "ws:auto", "ws:tree"] * 2
    assert [r["system"] for r in rows] == ["greedy", "ws:auto", "ws:tree"]
    assert all(r["identical"] and r["tokens"] == rows[0]["tokens"] for r in rows)  # float32: lossless
    with pytest.raises(ValueError, match="start with greedy"):
        bench.measure(completer, [case], ("ws:auto", "greedy"), 12)
