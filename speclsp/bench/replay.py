"""`speclsp bench replay`: drafting policies replayed against the model's greedy output.

The model decodes each case greedily once. Every drafting policy is then replayed step by
step against that output, with no verify pass: at each step the drafter proposes (a chain,
or a tree and the nodes the policy keeps), the accepted length is the longest drafted path
that the greedy output follows (what verification keeps: greedy decoding is
deterministic), and the step costs this machine's calibrated verify cost for that many
tokens (`LoadedModel.step_costs`). So forwards per token and model seconds come out for
many policies in the time of one engine run, and beside them four bounds:

- tree:auto+next  the tree controller told the model's next token: its estimate for each
               first-level node is the truth, deeper nodes keep theirs. What a perfect
               one-token predictor would add (after a miss, which of the drafted
               continuations the model takes is the controller's costliest unknown);
- tree:oracle  the proposed tree (as `ws:tree` proposes it) with only the path the model
               follows verified: the best any node selection could do with this drafter;
- copy>=1      at every step, the longest continuation copied from any place in the
               prompt, the open documents, the document's drafting history (text its edit
               removed) or the output so far whose preceding token is
               the last token: the best a drafter matching one token of context could do;
- copy         the same from anywhere (an LZ77 parse of the output): no drafter that
               copies text could need fewer forwards.

The bounds know the future; they say how much is left to win, not what a drafter gets.
Token recycling (the model's own top-k picks) needs the model's logits and is not
replayed, so the trees here are the workspace trees alone. Prefill (and the first token,
which its forward gives) is left out: the times are decode model time, greedy's being one
forward at cost(0) per further token.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from ..drafting.controller import CostAwareLookahead, CostModel, TreeAcceptance, TreeLookahead, parse_lookahead
from ..drafting.drafter import MAX_DRAFT, NO_DRAFT, PromptLookupDrafter
from ..drafting.tree import NO_TREE
from ..drafting.workspace import WorkspaceDrafter
from .report import fmt, local_backend, ratio, write_report

POLICIES = (
    "lookup:fixed:10",
    "chain:fixed:10",
    "chain:fixed:64",
    "chain:auto",
    "tree:fixed:8",
    "tree:fixed:16",
    "tree:fixed:64",
    "tree:auto",
    "tree:auto+next",
    "tree:oracle",
    "copy>=1",
    "copy",
)


@dataclass
class Tally:
    forwards: int = 0
    nodes: int = 0
    seconds: float = 0.0


class Costs:
    """Seconds of a verify pass over the pending token and n drafted ones: the controllers'
    own shape of the calibrated table (interpolated, extrapolated beyond the largest size,
    made non-decreasing since timing noise only ever adds time), at a fixed load level."""

    def __init__(self, table: dict[int, float]):
        self.table = dict(table)
        self._shape = CostModel(self.table).shape

    def __call__(self, n: int) -> float:
        return self._shape(n)


@dataclass
class ToldNext(TreeAcceptance):
    """The tree controller's acceptance estimates, told the token the model picks next: a
    first-level node's chance is the truth (the ceiling for that token, the floor for its
    siblings), a deeper node's is its estimate given its parent, as before."""

    next_token: int | None = None

    def path_probs(self, tree) -> list[float]:
        probs = super().path_probs(tree)
        if self.next_token is None:
            return probs
        out: list[float] = []
        for i, p in enumerate(tree.parents):
            if p < 0:
                out.append(self.ceiling if tree.tokens[i] == self.next_token else self.floor)
            else:
                out.append(out[p] * (probs[i] / probs[p] if probs[p] > 0 else 0.0))
        return out


def followed(tree, out: list[int], i: int) -> list[int]:
    """The nodes of `tree` on the path the output follows from position `i`."""
    kids = tree.children()
    at = -1
    path: list[int] = []
    while i + len(path) < len(out):
        nxt = next((c for c in kids.get(at, ()) if tree.tokens[c] == out[i + len(path)]), None)
        if nxt is None:
            break
        path.append(nxt)
        at = nxt
    return path


def copy_length(hay: np.ndarray, prev: int | None, want: list[int]) -> int:
    """The longest prefix of `want` found in `hay` (after a token equal to `prev`, if given)."""
    if not want:
        return 0
    starts = np.nonzero(hay == want[0])[0]
    if prev is not None:
        starts = starts[(starts > 0) & (hay[np.maximum(starts - 1, 0)] == prev)]
    best = 0
    for j in starts:
        n = 0
        while n < len(want) and j + n < len(hay) and hay[j + n] == want[n]:
            n += 1
        best = max(best, n)
        if best == len(want):
            break
    return best


def replay(completer, case_prompt, out: list[int], policy: str, cost: Costs, state: dict) -> Tally:
    """One policy over one case's greedy output. `state` keeps controllers across cases."""
    req, prompt_ids, context = case_prompt
    t = Tally()
    if policy.startswith("copy"):
        prev_needed = policy == "copy>=1"
        i = 1  # the prefill's forward gave the first token
        while i < len(out):
            hay = np.array(context + [-1] + out[:i])
            ids = prompt_ids + out[:i]
            n = copy_length(hay, ids[-1] if prev_needed else None, out[i : i + min(MAX_DRAFT, len(out) - i - 1)])
            t.forwards += 1
            t.nodes += n
            t.seconds += cost(n)
            i += n + 1
        return t
    kind, spec = policy.split(":", 1)
    drafter = PromptLookupDrafter() if kind == "lookup" else completer.drafter_for(req)
    drafter.begin(prompt_ids)
    learns = spec in ("auto", "auto+next")  # a controller that plans and learns as in the engine
    if kind == "tree" and spec in ("auto", "oracle"):
        ctl = state.setdefault("tree", TreeLookahead.calibrated(cost.table))
    elif spec == "auto+next":  # learns on its own: its choices, hence its observations, differ
        ctl = state.setdefault("told", TreeLookahead.calibrated(cost.table, tree_acceptance=ToldNext()))
    elif spec == "auto":
        ctl = state.setdefault("chain", CostAwareLookahead.calibrated(cost.table))
    else:
        ctl = parse_lookahead(spec)
    i = 1  # the prefill's forward gave the first token
    while i < len(out):
        ids = prompt_ids + out[:i]
        room = min(MAX_DRAFT, len(out) - i - 1)  # the bonus token must fit, as in the engine
        if kind == "tree":
            assert isinstance(drafter, WorkspaceDrafter)  # kind "tree" drafts from the workspace
            size = 2 * ctl.max_nodes if learns or spec == "oracle" else int(spec.split(":")[-1])
            proposed = drafter.propose_tree(ids, size, room) if room > 0 else NO_TREE
            if spec == "oracle":
                keep = followed(proposed, out, i)
            elif learns:
                if isinstance(ctl.tree_acceptance, ToldNext):
                    ctl.tree_acceptance.next_token = out[i]
                keep, _ = ctl.plan_tree(proposed)
            else:
                keep = list(range(len(proposed)))
            tree = proposed.select(keep)
            path = followed(tree, out, i)
            n, acc = len(tree), len(path)
            if learns:
                ctl.record_tree(tree, path, cost(n))
        else:
            draft = drafter.propose(ids, room) if room > 0 else NO_DRAFT
            n = min(ctl.choose_k(draft, None), len(draft.tokens)) if draft.tokens else 0
            acc = 0
            while acc < n and out[i + acc] == draft.tokens[acc]:
                acc += 1
            ctl.record(draft, n, acc, cost(n))
        t.forwards += 1
        t.nodes += n
        t.seconds += cost(n)
        i += acc + 1
    return t


def main(args) -> dict:
    from tqdm import tqdm

    from ..completion.loader import Choice, load_completer
    from .engine import cases, history_cases

    quick = getattr(args, "quick", False)
    max_new = 48 if quick else getattr(args, "max_tokens", 96)
    completer = load_completer(
        Choice.of(args, draft_model=""), progress=lambda m: print(f"speclsp: {m}", file=sys.stderr), calibrate="full"
    )
    backend = local_backend(completer)
    lm = backend.lm
    cost = Costs(backend.step_costs())
    all_cases = cases(quick)
    if getattr(args, "repo", None):
        all_cases = [c for c in all_cases if c.kind != "edit"] + history_cases(
            args.repo, getattr(args, "commits", 20), 6 if quick else getattr(args, "max_cases", 24)
        )
    engine = backend.engine
    prepared = []
    for case in tqdm(all_cases, desc="greedy outputs", file=sys.stderr):
        req = case.request(max_new)
        prompt, rules = completer.prompt_for(req)
        engine.reset()
        out = list(engine.generate(prompt.ids, max_new_tokens=max_new, stop_text=rules.cut).token_ids)
        context = list(prompt.ids)
        for text in [*(d.text for d in req.other_documents), req.text, *req.history]:
            context += [-1] + list(completer.backend.encode(text))
        prepared.append((case, (req, list(prompt.ids), context), out))
    rows = []
    state: dict = {}
    with tqdm(total=len(prepared) * len(POLICIES), desc="replay", file=sys.stderr) as bar:
        for case, cp, out in prepared:
            for policy in POLICIES:
                t = replay(completer, cp, out, policy, cost, state)
                rows.append(
                    {
                        "case": case.name,
                        "kind": case.kind,
                        "policy": policy,
                        "tokens": len(out),
                        "forwards": t.forwards,
                        "nodes": t.nodes,
                        "seconds": t.seconds,
                    }
                )
                bar.update(1)
    summary = summarise(rows, cost)
    report = {
        "model": lm.name,
        "device": str(lm.device),
        "dtype": lm.precision,
        "max_new_tokens": max_new,
        "costs": {str(k): v for k, v in cost.table.items()},
        "rows": rows,
        "summary": summary,
    }
    text = render(report)
    print(text)
    write_report(getattr(args, "out", "bench-out"), "replay", report, text)
    return report


def summarise(rows: list[dict], cost: Costs) -> dict:
    out: dict = {}
    for kind in sorted({r["kind"] for r in rows}):
        rs = [r for r in rows if r["kind"] == kind]
        tokens = sum(r["tokens"] for r in rs if r["policy"] == POLICIES[0])
        steps = sum(max(0, r["tokens"] - 1) for r in rs if r["policy"] == POLICIES[0])  # after the prefill's token
        greedy_s = steps * cost(0)
        per = {"greedy": {"forwards": steps, "nodes_per_forward": 0.0, "seconds": greedy_s}}
        for policy in POLICIES:
            mine = [r for r in rs if r["policy"] == policy]
            fw = sum(r["forwards"] for r in mine)
            per[policy] = {
                "forwards": fw,
                "nodes_per_forward": sum(r["nodes"] for r in mine) / fw if fw else 0.0,
                "seconds": sum(r["seconds"] for r in mine),
            }
        for p in per.values():
            p["forwards_per_token"] = p["forwards"] / tokens if tokens else None
            p["vs_greedy"] = ratio(greedy_s, p["seconds"])
            p["vs_chain_auto"] = ratio(per["chain:auto"]["seconds"], p["seconds"])
        out[kind] = {"tokens": tokens, "policies": per}
    return out


def render(report: dict) -> str:
    lines = [
        f"model {report['model']} on {report['device']} ({report['dtype']}), "
        f"{report['max_new_tokens']} new tokens max; "
        "drafting replayed against greedy output, model seconds from this machine's calibrated verify costs "
        "(decode only); tree:auto+next, tree:oracle, copy>=1 and copy are bounds that know the future",
        "",
        "verify pass over the pending token + k drafted, calibrated ms: "
        + ", ".join(
            f"k={k} {float(v) * 1e3:.0f}" for k, v in sorted(report["costs"].items(), key=lambda kv: int(kv[0]))
        ),
        "",
        "| workload | policy | forwards | forwards/token | verified/forward | model s | vs greedy | vs chain:auto |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, s in report["summary"].items():
        for policy, p in s["policies"].items():
            lines.append(
                f"| {kind} | {policy} | {p['forwards']} | {fmt(p['forwards_per_token'])} | "
                f"{fmt(p['nodes_per_forward'], 1)} | {p['seconds']:.1f} | {fmt(p['vs_greedy'])}x | "
                f"{fmt(p['vs_chain_auto'])}x |"
            )
    return "\n".join(lines)
