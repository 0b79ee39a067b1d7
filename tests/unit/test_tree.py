"""Token trees: drafted tries verified in one forward are lossless.

- every node's logits from one tree forward equal a plain forward over its branch (sdpa and
  eager attention, float32, the tiny random model);
- the engine with random, adversarial and perfect trees produces greedy's tokens exactly;
- the pure parts: accepting a path, building and cutting tries, the controller's sizing
  and what it learns; the workspace drafter's trees keep every candidate branch and
  re-anchor after a miss.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speclsp.drafting.controller import CostModel, TreeAcceptance, TreeLookahead
from speclsp.drafting.index import NgramIndex
from speclsp.drafting.tree import DraftTree, TrieBuilder, accept_tree
from speclsp.drafting.workspace import WorkspaceDrafter
from speclsp.local.engine import Engine
from speclsp.local.model import KVState


def random_tree(rng: random.Random, n: int, vocab: int = 400) -> DraftTree:
    parents = [-1] + [rng.randrange(-1, i) for i in range(1, n)]
    tokens = [rng.randrange(vocab) for _ in range(n)]
    return DraftTree(tuple(tokens), tuple(parents), (1.0,) * n, ("test",) * n, (4,) * n)


def branch(tree: DraftTree, i: int) -> list[int]:
    out = []
    while i >= 0:
        out.append(tree.tokens[i])
        i = tree.parents[i]
    return out[::-1]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_every_node_sees_exactly_its_branch(tiny_lm, attn):
    lm = tiny_lm
    lm.model.set_attn_implementation(attn)
    try:
        assert lm.tree_attention
        rng = random.Random(1)
        prompt = [rng.randrange(400) for _ in range(40)]
        tree = random_tree(rng, 16)
        kv = KVState()
        lm.forward(kv, prompt)
        logits = lm.forward_tree(kv, 7, tree.tokens, tree.parents)  # [1 + n, V]
        for i in range(-1, len(tree)):
            ref = lm.forward(KVState(), prompt + [7] + (branch(tree, i) if i >= 0 else []))[-1]
            assert (ref - logits[i + 1]).abs().max().item() < 1e-4, (attn, i)
        # Keeping one path leaves the cache as if that branch had been fed in order.
        path = [j for j in range(len(tree)) if j in _ancestors(tree, len(tree) - 1)]
        lm.keep_path(kv, len(prompt), path)
        assert kv.ids == prompt + [7] + branch(tree, len(tree) - 1)
        nxt = lm.forward(kv, [3])[-1]
        ref = lm.forward(KVState(), kv.ids)[-1]
        assert (nxt - ref).abs().max().item() < 1e-4
    finally:
        lm.model.set_attn_implementation("sdpa")


def _ancestors(tree: DraftTree, i: int) -> set[int]:
    out = set()
    while i >= 0:
        out.add(i)
        i = tree.parents[i]
    return out


class TreeScript:
    """Proposes a tree from a function of the sequence (random, adversarial, perfect)."""

    def __init__(self, fn):
        self.fn = fn

    def begin(self, prompt_ids):
        pass

    def propose(self, ids, max_tokens):
        raise AssertionError("the engine must ask for trees")

    def propose_tree(self, ids, max_nodes, max_depth):
        return self.fn(list(ids), max_nodes, max_depth)


class TakeAll(TreeLookahead):
    """Verifies the whole proposed tree (the sizing is tested on its own below)."""

    def plan_tree(self, tree, step_budget_s=None):
        return list(range(len(tree))), 0.0


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=st.lists(st.integers(0, 400), min_size=1, max_size=40),
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(["random", "adversarial", "perfect", "none"]),
    size=st.integers(1, 40),
)
def test_tree_speculation_equals_greedy(tiny_lm, prompt, seed, kind, size):
    engine = Engine(tiny_lm)
    n = 20
    expected = engine.generate(prompt, max_new_tokens=n).token_ids
    full = list(prompt) + expected
    rng = random.Random(seed)

    def trees(ids, max_nodes, max_depth):
        t = random_tree(rng, min(size, max_nodes))
        if kind == "none":  # nothing to copy: the engine recycles the model's own top-k
            return DraftTree()
        if kind == "random":
            return t
        # The true continuation as one branch, with decoys beside it (adversarial: the
        # true branch wrong in its last token).
        truth = full[len(ids) : len(ids) + max(1, min(max_depth, size // 2))]
        if kind == "adversarial" and truth:
            truth = truth[:-1] + [(truth[-1] + 1) % 400]
        b = TrieBuilder()
        b.add([rng.randrange(400) for _ in range(3)], 1, "test", 2)
        b.add(truth, 2, "test", 2)
        b.add(truth[:1] + [rng.randrange(400) for _ in range(3)], 1, "test", 2)
        return b.tree(max_nodes)

    engine.reset()
    r = engine.generate(prompt, max_new_tokens=n, drafter=TreeScript(trees), policy=TakeAll())
    assert r.token_ids == expected
    if kind == "perfect" and len(expected) > 2 and r.stats.stop_reason == "max_tokens":
        assert r.stats.forwards < len(expected) - 1
    if kind == "none" and r.stats.forwards > 1:
        assert "recycle" in r.stats.draft_sources


def test_recycled_trees_grow_from_the_models_recent_picks():
    from speclsp.drafting.recycle import Successors

    s = Successors(k=3)
    s.observe([5, 6], [[(6, 0.7), (9, 0.2), (1, 0.1)], [(7, 0.9), (8, 0.05), (2, 0.01)]])
    t = s.tree(5, widths=(2, 1))
    assert t.tokens == (6, 9, 7) and t.parents == (-1, -1, 0) and t.shares == (0.7, 0.2, 0.9)
    assert set(t.sources) == {"recycle"}
    assert len(s.tree(42)) == 0


def test_accept_tree_follows_the_models_picks():
    #        -1
    #      /    \
    #   0:5     1:6
    #    |      /  \
    #   2:7  3:8   4:9
    t = DraftTree((5, 6, 7, 8, 9), (-1, -1, 0, 1, 1), (0.5, 0.5, 1, 0.5, 0.5), ("x",) * 5, (2,) * 5)
    picks = [6, 0, 9, 0, 0, 42]  # picks[i + 1] follows node i: 6 (node 1), then 9 (node 4), then 42
    assert accept_tree(t, picks) == ([1, 4], 42)
    assert accept_tree(t, [1, 0, 0, 0, 0, 0]) == ([], 1)
    assert t.width() == 3 and t.depths() == [1, 1, 2, 2, 2]
    assert t.chain().tokens == (5, 7)  # the larger share first, then the lower index on ties
    assert t.select([1, 3]).parents == (-1, 0)
    with pytest.raises(ValueError):
        t.select([3])


def test_trie_orders_nodes_by_path_share_and_merges_prefixes():
    b = TrieBuilder()
    b.add([1, 2, 3], 3, "document", 8)
    b.add([1, 2, 4], 1, "workspace", 4)
    b.add([5], 1, "prompt", 2)
    t = b.tree(10)
    assert t.tokens[:3] == (1, 2, 3)  # path shares 0.8, 0.8, 0.6
    assert set(t.tokens) == {1, 2, 3, 4, 5}
    assert all(p < i for i, p in enumerate(t.parents))
    assert t.sources[0] == "document" and t.match_lens[0] == 8
    assert len(b.tree(2)) == 2


def test_controller_sizes_the_tree_from_costs_and_what_it_learns():
    flat = TreeLookahead(costs=CostModel({0: 0.1, 64: 0.1}))  # a GPU-like device: nodes are free
    steep = TreeLookahead(costs=CostModel({0: 0.1, 1: 0.2, 64: 6.4}))  # each node costs a step
    b = TrieBuilder()
    for j in range(8):
        b.add([j, j + 100, j + 200], 1, "workspace", 8)
    t = b.tree(64)
    keep, _ = flat.plan_tree(t)
    assert len(keep) == len(t)  # free nodes: verify every branch
    assert steep.plan_tree(t)[0] == []  # a split vote never pays at that price
    # A long verbatim match is learnt within a few steps.
    acc = TreeAcceptance()
    chain = DraftTree.from_draft(
        __import__("speclsp.drafting.drafter", fromlist=["Draft"]).Draft(tuple(range(32)), "document", 40)
    )
    p0 = acc.path_probs(chain)[-1]
    for _ in range(4):
        acc.observe(chain, list(range(32)))
    assert acc.path_probs(chain)[-1] > 3 * p0
    saved = acc.to_dict()
    fresh = TreeAcceptance()
    fresh.update(saved)
    assert fresh.path_probs(chain) == acc.path_probs(chain)


def test_the_controller_uses_the_tile_of_rows_it_pays_for_anyway():
    """Matrix kernels cost about the same up to the end of a 16-row tile (a staircase like
    this CPU's calibration: 145 ms for 16 tokens, 165 ms for 17). With the calibration on
    both sides of that edge the controller verifies more of the 15 drafted tokens that fit
    beside the pending one, and not the 16th; priced from powers of two only, nodes 9-15
    looked 4 ms each and it stopped at 8."""
    chain = DraftTree((*range(30),), (*range(-1, 29),), (1.0,) * 30, ("document",) * 30, (40,) * 30)
    staircase = {
        0: 0.131,
        1: 0.131,
        3: 0.131,
        7: 0.131,
        8: 0.131,
        15: 0.141,
        16: 0.167,
        31: 0.182,
        32: 0.210,
        64: 0.281,
    }
    keep, _ = TreeLookahead(costs=CostModel(staircase)).plan_tree(chain)
    assert 8 < len(keep) <= 15
    powers = {k: v for k, v in staircase.items() if k in (0, 1, 8, 16, 32, 64)}
    assert len(TreeLookahead(costs=CostModel(powers)).plan_tree(chain)[0]) == 8


def _drafter(prompt, docs=()):
    index = NgramIndex()
    for i, d in enumerate(docs):
        index.open_ids(f"file:///{i}.py", d, "document")
    d = WorkspaceDrafter(index)
    d.begin(prompt)
    return d


def test_a_split_vote_drafts_every_branch_and_the_prompt_is_always_heard():
    ctx = [11, 12, 13, 14, 15, 16, 17, 18]
    docs = [ctx + [1, 2, 3], ctx + [4, 5, 6], ctx + [7, 8, 9]]
    prompt = [50, 51] + ctx[-4:] + [30, 31, 32] + [60] + ctx
    d = _drafter(prompt, docs)
    assert d.propose(prompt, 8).tokens == ()  # no continuation has 0.6 of the vote
    t = d.propose_tree(prompt, 64)
    firsts = {t.tokens[i] for i, p in enumerate(t.parents) if p < 0}
    assert {1, 4, 7} <= firsts
    assert 30 in firsts  # the prompt's own (shorter) match takes part


def test_after_a_miss_the_tree_reanchors_on_the_text_after_the_cursor():
    # <SUF>=90 the text after the cursor <MID>=80, then the model's tokens.
    prompt = [1, 2, 3, 90, 72, 73, 74, 75, 80, 5, 6]
    d = WorkspaceDrafter(NgramIndex(), fim_suffix_id=90, fim_middle_id=80)
    d.begin(prompt)
    # The model wrote 99 then 72: no two tokens match anything, one does.
    t = d.propose_tree(prompt + [99, 72], 16)
    assert t.tokens[:3] == (73, 74, 75) and t.sources[0] == "anchor"
    assert d.propose(prompt + [99, 72], 16).tokens == ()  # the chain drafter waits


def test_what_the_tree_controller_learnt_outlives_the_process(tiny_lm):
    from speclsp.completion.completer import Completer
    from speclsp.local.backend import LocalBackend

    first = Completer(LocalBackend(tiny_lm))
    acc = first.tree_policy().tree_acceptance
    for _ in range(6):
        acc.observe(DraftTree((1, 2), (-1, 0), (1.0, 1.0), ("document",) * 2, (40, 40)), [0, 1])
    first.save_learned(min_interval_s=0)
    again = Completer(LocalBackend(tiny_lm))  # a new process: only the disk carries it
    assert again.tree_policy().tree_acceptance.to_dict() == acc.to_dict() != {}
