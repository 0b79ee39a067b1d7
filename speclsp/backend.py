"""The seam between the completion pipeline and whatever runs the model: values and one
interface, no tensors.

A backend turns a prompt (token ids) into a greedy continuation, drafting and verifying as
it likes, streaming text as it grows and stopping on a cancel token, a deadline, a token
budget or a text rule. The completion pipeline (`completion/completer.py`) knows backends
only through `Backend`; the local engine (`local/backend.py`) is one, a remote inference
server another, and neither the session nor the server changes when one is added.

Everything here is plain Python, so the state layer can hold a `CancelToken` without
importing torch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .drafting.controller import LookaheadPolicy
from .drafting.drafter import Drafter


class BackendError(RuntimeError):
    """The backend cannot serve this request (a server down, an HTTP error, a malformed
    answer, an unknown model): one line for the user, with no secrets in it, and its
    `kind`, what the session tells faults apart by (one popup per kind while it lasts):
    "config" (a setting is wrong), "unreachable", "busy" (asked to wait), "http" (an error
    status), "stalled" (nothing came for too long), "stream" (a broken or failed stream)."""

    def __init__(self, message: str, kind: str = "config") -> None:
        super().__init__(message)
        self.kind = kind


class CancelToken:
    """Set by whoever no longer wants the result; checked by the backend between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def stop_requested(cancel: CancelToken | None, deadline: float | None) -> str:
    """Why a generation must stop now: "cancelled", "deadline" (time.monotonic()), or ""."""
    if cancel is not None and cancel.cancelled:
        return "cancelled"
    if deadline is not None and time.monotonic() >= deadline:
        return "deadline"
    return ""


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens whose KV came from the previous request
    new_tokens: int = 0  # generated tokens
    forwards: int = 0  # forward passes after prefill (one per step)
    prefill_forwards: int = 0
    drafted: int = 0  # drafted tokens (chain) or tree nodes sent to verification
    tree_forwards: int = 0  # verify passes over a branching token tree
    accepted: int = 0  # drafted tokens kept
    prefill_ms: float = 0.0
    ttft_ms: float = 0.0  # request start -> first generated token
    total_ms: float = 0.0
    tokens_per_s: float = 0.0  # new tokens / decode time (after the first token)
    stop_reason: str = ""  # "eos", "max_tokens", "deadline", "cancelled", "stop_text"
    lookahead: str = ""
    device: str = ""
    dtype: str = ""
    model: str = ""
    backend: str = "local"  # "local" | "openai"
    endpoint: str = ""  # the remote server's host:port ("" for local)
    draft_sources: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["acceptance"] = round(self.acceptance, 4)
        d["verified_per_forward"] = round(self.drafted / self.forwards, 2) if self.forwards else 0.0
        d["accepted_per_forward"] = round(self.accepted / self.forwards, 2) if self.forwards else 0.0
        for key in ("prefill_ms", "ttft_ms", "total_ms", "tokens_per_s"):
            d[key] = round(d[key], 2)
        return d


@dataclass(frozen=True)
class Step:
    """One verify pass: what was drafted, how much was kept, what it cost."""

    k: int  # drafted tokens verified (for a token tree: its nodes)
    accepted: int  # drafted tokens kept (for a tree: the accepted path's length)
    seconds: float
    source: str
    match_len: int
    depth: int = 0  # a token tree's depth (0: a chain, whose depth is k)


@dataclass
class GenerationResult:
    token_ids: list[int]
    text: str
    stats: GenerationStats
    steps: list[Step]


class Backend(Protocol):
    """What the completion pipeline needs from a model runner."""

    name: str  # the model's name as configured
    device: str  # where it runs, for statistics ("cpu", "cuda:0", an endpoint's host)
    tokenizer: Any  # the model's tokenizer: the n-gram index tokenizes documents with it

    # Token text -> id (None: the tokenizer lacks it) for every FIM marker, repo/file token
    # and BOS any known family uses (`completion.fim.token_strings()`); the completer
    # detects the family's template from it (`completion.fim.detect_fim`).
    @property
    def special_ids(self) -> Mapping[str, int | None]: ...

    @property
    def drafter_kinds(self) -> tuple[str, ...]:
        """The drafters it offers: "ngram", and "model"/"hybrid" with a draft model."""

    dtype: str  # the weights' precision ("" where the backend does not know: a remote server)
    dtype_reason: str  # why that precision (measured fastest on this CPU, asked for, ...)
    problem: str  # why it cannot serve now ("" = none known): a remote server not reachable

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def describe(self) -> str:
        """Where and how it runs, for the ready message ("cpu (int8)", "host:port (model)")."""

    def stats(self) -> dict:
        """Its own figures for `speclsp complete --json` (precision, draft model)."""

    def close(self) -> None:
        """Release what it holds (threads, connections); called when a reload replaces it."""

    def step_costs(self) -> dict[int, float]:
        """Seconds of one verify pass per draft length k, measured once on this device."""

    def calibrate_step(self) -> bool:
        """Time one more slice of the cost calibration; False once there is nothing more
        to measure (a backend that measures nothing: always False)."""

    def calibrate(self, budget_s: float | None = None, max_pass_s: float | None = None) -> dict[int, float]:
        """Complete the cost calibration now (one-shot commands, benchmarks)."""

    def learned(self) -> dict:
        """The tree controller's acceptance estimates from earlier runs ({} if none kept)."""

    def save_learned(self, learned: dict) -> None:
        """Keep them for the next process (a backend that keeps nothing: a no-op)."""

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        drafter: Drafter | None,
        drafter_kind: str,
        policy: LookaheadPolicy | None,
        deadline: float | None,
        cancel: CancelToken | None,
        on_text: Callable[[str], None] | None,
        stop_text: Callable[[str], int | None] | None,
        step_budget_s: float | None,
        stop: Sequence[str] = (),
    ) -> GenerationResult:
        """Greedy continuation of `prompt_ids` (`drafter` None: no speculation).

        `stop`: strings that end the completion, which a server can check on its side
        (kept in the text, so `stop_text` sees it); `stop_text` is the rule that counts.
        Raises `BackendError` when it cannot serve."""
