"""One completion, end to end: request -> prompt -> speculative generation -> what is shown.

The pipeline reads as four named steps (after llm-ls):

    should_complete  nothing to do for an empty budget or a disabled request
    build_prompt     context.build_prompt with the model's FIM tokens and the budget
    generate         engine.generate with a drafter and a lookahead policy, streaming
    format           postprocess.ShowRules.finalize

Both the one-shot CLI (`speclsp complete`) and the language server use this; the server
adds sessions, caching and cancellation around it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from .context import FimTokens, OpenDocument, Prompt, PromptBudget, build_prompt, split_at
from .controller import CostAwareLookahead, LookaheadPolicy, parse_lookahead
from .draft_model import DraftModelDrafter, HybridDrafter, parse_drafter
from .drafter import Drafter
from .engine import CancelToken, Engine, GenerationStats, Step
from .model import LoadedModel
from .ngram import NgramIndex, WorkspaceDrafter, make_tokenize
from .postprocess import ShowRules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompletionRequest:
    path: str
    text: str
    line: int  # 0-based
    character: int  # 0-based, in code points
    other_documents: tuple[OpenDocument, ...] = ()
    max_tokens: int = 64
    lookahead: str = "auto"  # fixed:K | heuristic | auto
    # ngram: the workspace n-gram drafter; model: the draft model only; hybrid: per step the
    # better of the two (both need a Completer with a draft model; draft_model.py).
    drafter: str = "ngram"
    speculate: bool = True  # False: plain greedy decoding of the same prompt (baseline)
    time_budget_s: float | None = None
    step_budget_s: float | None = None
    max_lines: int = 16
    budget: PromptBudget = field(default_factory=PromptBudget)


@dataclass(frozen=True)
class Completion:
    text: str  # the suggestion to insert at the cursor ("" = none)
    raw_text: str  # what the model wrote, before the show rules
    token_ids: tuple[int, ...]
    stats: GenerationStats
    steps: tuple[Step, ...]
    prompt: Prompt


class Completer:
    """A model, its engine and the pipeline around it."""

    def __init__(self, lm: LoadedModel, draft_lm: LoadedModel | None = None):
        self.lm = lm
        # Built now so that a draft model with another tokenizer fails at load, not later.
        # It lives as long as the completer: its KV cache and what it learnt carry over.
        self.model_drafter = DraftModelDrafter(draft_lm, lm) if draft_lm is not None else None
        self.engine = Engine(lm)
        f = lm.fim
        self.fim = (
            FimTokens(f["<|fim_prefix|>"], f["<|fim_suffix|>"], f["<|fim_middle|>"], f["<|file_sep|>"], f["<|repo_name|>"])
            if lm.has_fim
            else None
        )

        self.tokenize = make_tokenize(lm.tokenizer)
        self._auto: CostAwareLookahead | None = None

    def auto_policy(self) -> CostAwareLookahead:
        """The controller, calibrated once per model and device, kept so it keeps learning."""
        if self._auto is None:
            self._auto = CostAwareLookahead.calibrated(self.lm.step_costs())
        return self._auto

    def policy_for(self, lookahead: str) -> LookaheadPolicy:
        return self.auto_policy() if lookahead.strip().lower() == "auto" else parse_lookahead(lookahead)

    def drafter_for(self, req: CompletionRequest, index: NgramIndex | None = None) -> WorkspaceDrafter:
        """A workspace drafter over `index`, or over an index of the request's own documents."""
        if index is None:
            index = NgramIndex(self.tokenize)
            for doc in req.other_documents:
                index.open(doc.path, doc.text, source="workspace")
            index.open(req.path, req.text)
        drafter = WorkspaceDrafter(index, fim_suffix_id=self.fim.suffix if self.fim else None,
                                   fim_middle_id=self.fim.middle if self.fim else None)
        prefix, _ = split_at(req.text, req.line, req.character)
        drafter.set_request(req.path, len(prefix))
        return drafter

    def speculation_drafter(self, ngram: Drafter, kind: str, policy: LookaheadPolicy | None = None,
                            step_budget_s: float | None = None) -> Drafter:
        """`ngram` itself for kind "ngram"; for "model" and "hybrid" a `HybridDrafter` over the
        draft model (and `ngram` for "hybrid"), weighing drafts with the auto controller's
        cost and acceptance models (`policy` if it is that controller)."""
        kind = parse_drafter(kind)
        if kind == "ngram":
            return ngram
        if self.model_drafter is None:
            log.warning("drafter %r needs a draft model and none is loaded: drafting with n-grams only", kind)
            return ngram
        lookahead = policy if isinstance(policy, CostAwareLookahead) else self.auto_policy()
        return HybridDrafter(self.model_drafter, ngram if kind == "hybrid" else None, lookahead,
                             step_budget_s=step_budget_s)

    def prompt_for(self, req: CompletionRequest) -> tuple[Prompt, ShowRules]:
        prefix, suffix = split_at(req.text, req.line, req.character)
        prompt = build_prompt(self.lm.encode, self.fim, req.path, prefix, suffix, req.other_documents, req.budget)
        return prompt, ShowRules.at(prefix, suffix, req.max_lines)

    def complete(
        self,
        req: CompletionRequest,
        *,
        drafter: Drafter | None = None,
        policy: LookaheadPolicy | None = None,
        cancel: CancelToken | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        """Complete at the request's cursor. `on_text` gets the shown text as it grows."""
        prompt, rules = self.prompt_for(req)
        if req.speculate:
            # `drafter` (the server's workspace drafter) is the n-gram part; req.drafter says
            # whether the draft model joins it.
            policy = policy or self.policy_for(req.lookahead)
            drafter = self.speculation_drafter(drafter or self.drafter_for(req), req.drafter, policy, req.step_budget_s)
        else:
            drafter, policy = None, None
        deadline = time.monotonic() + req.time_budget_s if req.time_budget_s else None
        shown = [""]

        def stream(raw: str) -> None:
            text = rules.finalize(raw)
            if on_text is not None and text != shown[0] and text.startswith(shown[0]):
                shown[0] = text
                on_text(text)

        result = self.engine.generate(
            prompt.ids,
            max_new_tokens=req.max_tokens,
            drafter=drafter,
            policy=policy,
            deadline=deadline,
            cancel=cancel,
            on_text=stream if on_text else None,
            stop_text=rules.cut,
            step_budget_s=req.step_budget_s,
        )
        text = rules.finalize(result.text)
        if on_text is not None and text != shown[0]:
            on_text(text)
        log.debug("completion %s:%d:%d -> %d chars, %s", req.path, req.line, req.character, len(text), result.stats.stop_reason)
        return Completion(text, result.text, tuple(result.token_ids), result.stats, tuple(result.steps), prompt)
