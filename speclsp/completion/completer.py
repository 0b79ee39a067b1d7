"""One completion, end to end: request -> prompt -> backend -> what is shown.

The pipeline reads as three named steps (after llm-ls):

    prompt_for   context.build_prompt with the model's FIM tokens (fim.detect_fim) and the budget, and the
                 show rules for this cursor
    generate     the backend (`speclsp.backend.Backend`) with a drafter and a lookahead
                 policy, streaming what the show rules let through
    finalize     postprocess.ShowRules.finalize on the whole text

Both the one-shot CLI (`speclsp complete`) and the language server use this; the server
adds sessions, caching and cancellation around it. The completer knows the model only
through the `Backend` interface, so it imports no torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from ..backend import Backend, CancelToken, GenerationStats, Step
from ..drafting.controller import CostAwareLookahead, LookaheadPolicy, TreeLookahead, parse_lookahead
from ..drafting.drafter import Drafter, parse_drafter
from ..drafting.index import NgramIndex
from ..drafting.tokens import make_tokenize
from ..drafting.workspace import WorkspaceDrafter
from .context import (
    FimTokens,
    OpenDocument,
    Prompt,
    PromptBudget,
    build_prompt,
    choose_other_documents,
    lf,
    line_ending,
    prompt_window,
    split_at,
)
from .fim import detect_fim
from .postprocess import ShowRules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompletionRequest:
    path: str
    text: str
    # The cursor as `context.split_at` reads it: lines split at "\n" only (a "\r" is text),
    # 0-based, the column in code points. The server's LSP lines also end at a lone "\r";
    # `build_request` turns its code-point offset into this form, so the two never mix.
    line: int
    character: int
    other_documents: tuple[OpenDocument, ...] = ()
    max_tokens: int = 64
    lookahead: str = "tree"  # tree | auto | heuristic | fixed:K
    # ngram: the workspace n-gram drafter; model: the draft model only; hybrid: per step the
    # better of the two (both need a Completer with a draft model; draft_model.py).
    drafter: str = "ngram"
    speculate: bool = True  # False: plain greedy decoding of the same prompt (baseline)
    time_budget_s: float | None = None
    step_budget_s: float | None = None
    max_lines: int = 16
    budget: PromptBudget = field(default_factory=PromptBudget)
    # What an editing session would have remembered for this document's drafting (text its
    # edits removed, accepted completions): drafted from, never in the prompt. The server
    # keeps its own (`ServerState.remember`); the benchmarks replay it here.
    history: tuple[str, ...] = ()
    # The suggestion's line endings: the document's own at the cursor (what a client that
    # inserts text as it comes needs), or "\n" always (`lf_only`: Neovim, whose buffers
    # are lines and whose inline completion splits the text at "\n" alone).
    lf_only: bool = False


@dataclass(frozen=True)
class Completion:
    text: str  # the suggestion to insert at the cursor ("" = none)
    raw_text: str  # what the model wrote, before the show rules
    token_ids: tuple[int, ...]
    stats: GenerationStats
    steps: tuple[Step, ...]
    prompt: Prompt


def build_request(
    path: str,
    text: str,
    line_starts: Sequence[int],
    offset: int,
    *,
    others: Iterable[OpenDocument],
    budget: PromptBudget,
    **options,
) -> CompletionRequest:
    """The request for a cursor at character `offset` of a whole document.

    The prompt sees a window of the document around the cursor (the same prompt as from the
    whole text, at a bounded cost: `context.prompt_window`) and other documents up to a
    total size (`context.choose_other_documents`, most recently edited first).
    """
    start, end = prompt_window(text, line_starts, offset, budget.max_prompt_tokens)
    # "\n" lines, as split_at counts them (not LSP's lines, which also end at a lone "\r"):
    # split_at(text[start:end], line, col) splits exactly at `offset`.
    line = text.count("\n", start, offset)
    col = offset - max(start, text.rfind("\n", start, offset) + 1)
    return CompletionRequest(
        path=path,
        text=text[start:end],
        line=line,
        character=col,
        other_documents=choose_other_documents(others),
        budget=budget,
        **options,
    )


class Completer:
    """A backend and the pipeline around it."""

    def __init__(self, backend: Backend):
        self.backend = backend
        # The FIM template of the model's family (fim.py), None: the plain prefix.
        self.fim: FimTokens | None = detect_fim(backend.special_ids)
        self.tokenize = make_tokenize(backend.tokenizer)
        self._auto: CostAwareLookahead | None = None
        self._tree: TreeLookahead | None = None
        self._saved_at = float("-inf")

    def auto_policy(self) -> CostAwareLookahead:
        """The controller, calibrated once per model and device, kept so it keeps learning."""
        if self._auto is None:
            self._auto = CostAwareLookahead.calibrated(self.backend.step_costs())
        return self._auto

    def tree_policy(self) -> TreeLookahead:
        """The controller over token trees, on the same calibration, kept so it keeps learning."""
        if self._tree is None:
            self._tree = TreeLookahead.calibrated(self.backend.step_costs())
            self._tree.tree_acceptance.update(self.backend.learned())
        return self._tree

    def calibrate_step(self) -> bool:
        """One slice of the backend's cost calibration (the server runs these while the
        model is idle); when it completes, the controllers take the new table. False once
        there is nothing more to measure (or the backend measures nothing)."""
        more = self.backend.calibrate_step()
        if not more:
            self.recalibrate()
        return more

    def calibrate(self, budget_s: float | None = None, max_pass_s: float | None = None) -> None:
        """Complete the calibration now (one-shot commands and benchmarks)."""
        self.backend.calibrate(budget_s, max_pass_s)
        self.recalibrate()

    def recalibrate(self) -> None:
        table = self.backend.step_costs()
        for policy in (self._auto, self._tree):
            if policy is not None:
                policy.costs.recalibrate(table)

    def save_learned(self, min_interval_s: float = 10.0) -> None:
        """Keep what the tree controller learnt for the next process (at most every
        `min_interval_s`; the server calls this after completions)."""
        now = time.monotonic()
        if self._tree is None or now - self._saved_at < min_interval_s:
            return
        self._saved_at = now
        self.backend.save_learned(self._tree.tree_acceptance.to_dict())

    def policy_for(self, lookahead: str) -> LookaheadPolicy:
        spec = lookahead.strip().lower()
        if spec == "auto":
            return self.auto_policy()
        if spec == "tree":
            return self.tree_policy()
        return parse_lookahead(lookahead)

    def drafter_for(self, req: CompletionRequest, index: NgramIndex | None = None) -> WorkspaceDrafter:
        """A workspace drafter over `index`, or over an index of the request's own documents."""
        if index is None:
            index = NgramIndex(self.tokenize)
            for doc in req.other_documents:
                index.open(doc.path, doc.text, source="workspace")
            index.open(req.path, req.text)
            for text in req.history:
                index.add_history(self.backend.encode(text))
        drafter = WorkspaceDrafter(
            index,
            fim_suffix_id=self.fim.suffix if self.fim else None,
            fim_middle_id=self.fim.middle if self.fim else None,
        )
        prefix, _ = split_at(req.text, req.line, req.character)
        drafter.set_request(req.path, len(prefix))
        return drafter

    def prompt_for(self, req: CompletionRequest) -> tuple[Prompt, ShowRules]:
        """The prompt and the show rules, every line ending as "\n" (`complete` gives the
        suggestion the document's own line ending back)."""
        prefix, suffix = (lf(t) for t in split_at(req.text, req.line, req.character))
        others = tuple(replace(d, text=lf(d.text)) if "\r" in d.text else d for d in req.other_documents)
        prompt = build_prompt(self.backend.encode, self.fim, req.path, prefix, suffix, others, req.budget)
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
        if req.speculate and self.backend.drafter_kinds:
            # `drafter` (the server's workspace drafter) is the n-gram part; req.drafter says
            # whether a draft model joins it (backends that have one). A backend that
            # drafts on its own side (a remote server: `drafter_kinds` empty) gets neither.
            policy = policy or self.policy_for(req.lookahead)
            drafter = drafter or self.drafter_for(req)
        else:
            drafter, policy = None, None
        deadline = time.monotonic() + req.time_budget_s if req.time_budget_s else None
        shown = [""]
        eol = "\n" if req.lf_only or "\r" not in req.text else line_ending(*split_at(req.text, req.line, req.character))

        def show(raw: str) -> str:
            text = rules.finalize(raw)
            return text.replace("\n", eol) if eol != "\n" else text

        def stream(raw: str) -> None:
            text = show(raw)
            if on_text is not None and text != shown[0] and text.startswith(shown[0]):
                shown[0] = text
                on_text(text)

        result = self.backend.generate(
            prompt.ids,
            max_new_tokens=req.max_tokens,
            drafter=drafter,
            drafter_kind=parse_drafter(req.drafter),  # a kind the backend lacks: it says so, drafts n-grams
            policy=policy,
            deadline=deadline,
            cancel=cancel,
            on_text=stream if on_text else None,
            stop_text=rules.cut,
            step_budget_s=req.step_budget_s,
            stop=rules.stop_strings,
        )
        text = show(result.text)
        self.save_learned()
        if on_text is not None and text != shown[0]:
            on_text(text)
        log.debug(
            "completion %s:%d:%d -> %d chars, %s",
            req.path,
            req.line,
            req.character,
            len(text),
            result.stats.stop_reason,
        )
        return Completion(text, result.text, tuple(result.token_ids), result.stats, tuple(result.steps), prompt)
