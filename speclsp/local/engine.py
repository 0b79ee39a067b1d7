"""The speculative decoding engine: prefill with prefix reuse, then draft-and-verify steps.

A ladder of small steps, each built on the last:

    prefill(prompt)     reuse the longest common prefix of the cached KV, feed the rest
    verify(pending, d)  one forward over [pending] + draft; greedy picks at every position
    accept(d, picks)    longest agreeing prefix of the draft + one bonus token; crop cache
    generate(...)       loop: ask the drafter, ask the policy for k, verify, accept, stream

Greedy output is identical to plain one-token-at-a-time decoding whatever the drafter
proposes and whatever k the policy picks: a drafted token is kept only if it is the
argmax the model would have produced at that position.

Invariant between steps: `kv.ids == prompt + generated[:-1]`. The last generated token
("pending") is known but not yet in the cache; the next forward feeds it first. The cache
is kept after a request (also a cancelled one) so the next request can reuse its prefix.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from ..backend import CancelToken, GenerationResult, GenerationStats, Step, stop_requested
from ..drafting.controller import FixedLookahead, LookaheadPolicy, TreePolicy
from ..drafting.drafter import MAX_DRAFT, Drafter, NullDrafter, TreeDrafter
from ..drafting.recycle import Successors
from ..drafting.tokens import common_prefix_len
from ..drafting.tree import accept_tree
from .model import PREFILL_CHUNK, KVState, LoadedModel

log = logging.getLogger(__name__)


def accept(draft: Sequence[int], picks: Sequence[int]) -> list[int]:
    """Longest prefix of `draft` equal to the model's picks, plus the model's next pick."""
    n = 0
    while n < len(draft) and draft[n] == picks[n]:
        n += 1
    return list(draft[:n]) + [picks[n]]


class Engine:
    """Owns a model's KV cache across requests; one generation at a time."""

    def __init__(self, lm: LoadedModel):
        self.lm = lm
        self.kv = KVState()
        self._lock = threading.Lock()
        # The model's own top-k after each token it was fed (token recycling, tree mode):
        # a draft where the workspace has none. Kept across requests, like the cache.
        self.successors = Successors()

    # --- ladder -------------------------------------------------------------------------

    def prefill(
        self, prompt_ids: Sequence[int], cancel: CancelToken | None, deadline: float | None = None
    ) -> tuple[int, int, int]:
        """Bring the cache to `prompt_ids` and return (first token, reused, forwards).

        The cache keeps its longest common prefix with the prompt, short of the last token:
        the last chunk fed (up to `PREFILL_CHUNK` tokens, the last token among them) gives
        the logits that pick the first token, in the same forward. While the user types,
        that chunk is all a request feeds: one forward where feeding the last token by
        itself took two. Returns -1 as first token if cancelled or past the `deadline`
        before the last chunk (a long prompt is bounded by the request's time budget too).
        """
        lm, kv = self.lm, self.kv
        keep = min(common_prefix_len(kv.ids, prompt_ids), len(prompt_ids) - 1)
        last = max(keep, len(prompt_ids) - PREFILL_CHUNK)  # where the last chunk starts
        fed = lm.prefill(kv, prompt_ids[:last], cancel, deadline)
        if fed is None or stop_requested(cancel, deadline):
            return -1, 0, 0
        reused, forwards = fed
        logits = lm.forward(kv, prompt_ids[last:], last_only=True)
        return lm.greedy(logits)[-1], reused, forwards + 1

    def verify(self, pending: int, draft: Sequence[int]) -> list[int]:
        """One forward over [pending] + draft -> the model's greedy pick after each: [1 + k]."""
        return self.lm.greedy(self.lm.forward(self.kv, [pending, *draft]))

    # --- the loop -----------------------------------------------------------------------

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int = 128,
        drafter: Drafter | None = None,
        policy: LookaheadPolicy | None = None,
        deadline: float | None = None,  # time.monotonic() after which no new step starts
        cancel: CancelToken | None = None,
        on_text: Callable[[str], None] | None = None,
        stop_text: Callable[[str], int | None] | None = None,
        step_budget_s: float | None = None,
    ) -> GenerationResult:
        """Greedy completion of `prompt_ids`, drafting with `drafter` (none: plain greedy).

        `stop_text(text)` may return a cut position: generation stops and the text is cut
        there. `on_text(text)` receives the whole text so far each time it grows.
        """
        if not prompt_ids:
            raise ValueError("empty prompt")
        drafter = drafter or NullDrafter()
        policy = policy or FixedLookahead(0)
        lm = self.lm
        stats = GenerationStats(
            prompt_tokens=len(prompt_ids),
            lookahead=policy.name,
            model=lm.name,
            device=str(lm.device),
            dtype=lm.precision,
        )
        steps: list[Step] = []
        with self._lock:
            t_start = time.perf_counter()
            try:
                return self._generate(
                    prompt_ids,
                    max_new_tokens,
                    drafter,
                    policy,
                    deadline,
                    cancel,
                    on_text,
                    stop_text,
                    step_budget_s,
                    stats,
                    steps,
                    t_start,
                )
            except BaseException:
                self.kv = KVState()  # a half-done forward may have left the cache unknown
                raise

    def _generate(
        self,
        prompt_ids,
        max_new_tokens,
        drafter,
        policy,
        deadline,
        cancel,
        on_text,
        stop_text,
        step_budget_s,
        stats: GenerationStats,
        steps: list[Step],
        t_start: float,
    ):
        lm = self.lm
        prompt_ids = list(prompt_ids)
        first, stats.reused_tokens, stats.prefill_forwards = self.prefill(prompt_ids, cancel, deadline)
        lm.sync()
        stats.prefill_ms = (time.perf_counter() - t_start) * 1e3
        generated: list[int] = []
        text = ""
        if first < 0:
            stats.stop_reason = stop_requested(cancel, deadline) or "cancelled"
        elif first in lm.end_ids:
            stats.stop_reason = "eos"
        elif max_new_tokens <= 0:
            stats.stop_reason = "max_tokens"
        else:
            generated.append(first)
        t_first = time.perf_counter()
        stats.ttft_ms = (t_first - t_start) * 1e3
        if generated:
            text = self._emit(generated, on_text)
            drafter.begin(prompt_ids)
        # Token trees where the drafter proposes them, the policy sizes them and the
        # model's attention takes a tree mask; chains otherwise.
        trees = isinstance(drafter, TreeDrafter) and isinstance(policy, TreePolicy) and lm.tree_attention
        while generated and not stats.stop_reason:
            if stop_text is not None and (cut := stop_text(text)) is not None:
                text, stats.stop_reason = text[:cut], "stop_text"
                break
            room = max_new_tokens - len(generated)
            if room <= 0:
                stats.stop_reason = "max_tokens"
                break
            if why := stop_requested(cancel, deadline):
                stats.stop_reason = why
                break
            # kv.ids == prompt + generated[:-1]; generated[-1] is pending.
            if trees:
                new = self._tree_step(drafter, policy, prompt_ids + generated, room, step_budget_s, stats, steps)
            else:
                new = self._chain_step(drafter, policy, prompt_ids + generated, room, step_budget_s, stats, steps)
            for i, t in enumerate(new):
                if t in lm.end_ids:
                    new = new[:i]
                    stats.stop_reason = "eos"
                    break
            generated.extend(new[: max(0, max_new_tokens - len(generated))])
            if new:
                text = self._emit(generated, on_text)
        if not stats.stop_reason:
            stats.stop_reason = "max_tokens"
        if (
            generated
            and stats.stop_reason != "stop_text"
            and stop_text is not None
            and (cut := stop_text(text)) is not None
        ):
            text = text[:cut]
        # The cache may hold the pending token's predecessor chain only; make sure it does
        # not run ahead of what we report (an EOS step may have accepted past it).
        keep = len(prompt_ids) + max(0, len(generated) - 1)
        lm.crop(self.kv, keep)
        t_end = time.perf_counter()
        stats.new_tokens = len(generated)
        stats.total_ms = (t_end - t_start) * 1e3
        decode_s = t_end - t_first
        stats.tokens_per_s = (len(generated) - 1) / decode_s if decode_s > 0 and len(generated) > 1 else 0.0
        return GenerationResult(generated, text, stats, steps)

    def _chain_step(
        self, drafter, policy, ids, room, step_budget_s, stats: GenerationStats, steps: list[Step]
    ) -> list[int]:
        """Draft a chain, verify k of it (the policy's choice), keep what the model agrees with."""
        lm = self.lm
        draft = drafter.propose(ids, min(MAX_DRAFT, room - 1))
        k = policy.choose_k(draft, step_budget_s) if draft.tokens else 0
        d = draft.tokens[:k]
        base = len(self.kv)
        t0 = time.perf_counter()
        picks = self.verify(ids[-1], d)
        new = accept(d, picks)
        lm.crop(self.kv, base + len(new))  # keep pending + accepted drafts
        lm.sync()
        dt = time.perf_counter() - t0
        n = len(new) - 1
        policy.record(draft, k, n, dt)
        steps.append(Step(k, n, dt, draft.source if k else "none", draft.match_len))
        stats.forwards += 1
        stats.drafted += k
        stats.accepted += n
        if k:
            src = stats.draft_sources.setdefault(draft.source, {"drafted": 0, "accepted": 0})
            src["drafted"] += k
            src["accepted"] += n
        return new

    def _tree_step(
        self,
        drafter: TreeDrafter,
        policy: TreePolicy,
        ids: list[int],
        room: int,
        step_budget_s: float | None,
        stats: GenerationStats,
        steps: list[Step],
    ) -> list[int]:
        """Draft a token tree, keep the nodes the policy sizes for this step, verify them in
        one forward (a tree mask), keep the longest path the model agrees with."""
        lm = self.lm
        proposed = drafter.propose_tree(ids, 2 * policy.max_nodes, min(MAX_DRAFT, room - 1))
        if not len(proposed) and room > 1:  # nothing to copy: the model's own recent picks
            proposed = self.successors.tree(ids[-1], max_nodes=min(2 * policy.max_nodes, 32))
        keep, _ = policy.plan_tree(proposed, step_budget_s)
        tree = proposed.select(keep)
        chain = tree.is_chain()
        base = len(self.kv)
        t0 = time.perf_counter()
        if chain:  # one branch: the plain causal forward
            logits = lm.forward(self.kv, [ids[-1], *tree.tokens])
        else:
            logits = lm.forward_tree(self.kv, ids[-1], tree.tokens, tree.parents)
        picks = lm.greedy(logits)
        path, bonus = accept_tree(tree, picks)
        # What the model thought after each token it keeps, for recycling.
        rows = [0] + [1 + i for i in path]
        self.successors.observe([ids[-1]] + [tree.tokens[i] for i in path], lm.top_k(logits[rows], self.successors.k))
        lm.keep_path(self.kv, base, path)
        lm.sync()
        dt = time.perf_counter() - t0
        policy.record_tree(tree, path, dt)
        steps.append(
            Step(
                len(tree),
                len(path),
                dt,
                tree.source if len(tree) else "none",
                tree.match_len,
                depth=0 if chain else max(tree.depths()),
            )
        )
        stats.forwards += 1
        stats.drafted += len(tree)
        stats.accepted += len(path)
        stats.tree_forwards += not chain
        for i, src in enumerate(tree.sources):
            s = stats.draft_sources.setdefault(src, {"drafted": 0, "accepted": 0})
            s["drafted"] += 1
            s["accepted"] += i in path
        return [tree.tokens[i] for i in path] + [bonus]

    def _emit(self, generated: list[int], on_text: Callable[[str], None] | None) -> str:
        text = self.lm.decode(generated)
        if on_text is not None:
            # A multi-byte character split across tokens decodes as U+FFFD until complete.
            on_text(text.rstrip("\ufffd"))
        return text

    def reset(self) -> None:
        """Start cold: no cached prefix and no recycled picks (the benchmarks run every
        system and every repeat from this same state; a repeat of a prompt would otherwise
        recycle the tokens its previous run generated)."""
        with self._lock:
            self.kv = KVState()
            self.successors = Successors()
