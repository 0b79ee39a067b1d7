"""One way to get a ready `Completer`: load the configured backend and wrap it.

Used by the language server, the CLI and every benchmark. The backend package is imported
here, lazily, so that importing the completion pipeline (or the session) imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .completer import Completer


class ModelChoice(Protocol):
    """What decides which model runs (the server's Config has these, and so do CLI args)."""

    model: str
    device: str
    dtype: str
    draft_model: str


@dataclass(frozen=True)
class Choice:
    """A `ModelChoice` for callers without a server Config (the CLI, the benchmarks)."""

    model: str = ""  # "" = the default model
    device: str = "auto"
    dtype: str = "auto"
    draft_model: str = ""

    @classmethod
    def of(cls, args: Any, **overrides: Any) -> "Choice":
        """From an argparse namespace (absent or None attributes keep the defaults)."""
        values = {f: getattr(args, f, None) for f in ("model", "device", "dtype", "draft_model")}
        values.update(overrides)
        return cls(**{k: v for k, v in values.items() if v is not None})


def load_completer(choice: ModelChoice, progress: Callable[[str], None] | None = None,
                   calibrate: bool = False) -> Completer:
    """Load `choice`'s model (and draft model) in this process; with `calibrate`, also
    measure (or read from the cache) the step costs the auto controller needs."""
    from ..local.backend import load_backend

    backend = load_backend(choice.model or None, choice.device, choice.dtype, choice.draft_model or None, progress=progress)
    completer = Completer(backend)
    if calibrate:
        if progress is not None:
            progress("measuring step costs")
        completer.auto_policy()  # calibrated once per model and device (cached on disk)
    return completer
