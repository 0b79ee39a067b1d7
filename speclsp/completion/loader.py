"""One way to get a ready `Completer`: load the configured backend and wrap it.

Used by the language server, the CLI and every benchmark. The backend packages are
imported here, lazily, so that importing the completion pipeline (or the session) imports
no torch. Two backends: "local" (the model in this process, `speclsp.local`) and "openai"
(an OpenAI-compatible server such as vLLM, `speclsp.remote`); for the latter `model` names
where the tokenizer files are (the served model's tokenizer: prompt budgets and the index).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .completer import Completer


class ModelChoice(Protocol):
    """What decides which model runs (the server's Config has these, and so do CLI args)."""

    # Read-only (properties), so frozen dataclasses qualify.
    @property
    def model(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def draft_model(self) -> str: ...
    @property
    def backend(self) -> str: ...  # "local" | "openai"
    @property
    def endpoint(self) -> str: ...  # openai: the API's base URL
    @property
    def remote_model(self) -> str: ...  # openai: the served model's name ("" = the server's first)
    @property
    def api_key_env(self) -> str: ...  # openai: the environment variable holding the key


@dataclass(frozen=True)
class Choice:
    """A `ModelChoice` for callers without a server Config (the CLI, the benchmarks)."""

    model: str = ""  # "" = the default model
    device: str = "auto"
    dtype: str = "auto"
    draft_model: str = ""
    backend: str = "local"
    endpoint: str = ""
    remote_model: str = ""
    api_key_env: str = ""

    @classmethod
    def of(cls, args: Any, **overrides: Any) -> Choice:
        """From an argparse namespace (absent or None attributes keep the defaults)."""
        names = ("model", "device", "dtype", "draft_model", "backend", "endpoint", "remote_model", "api_key_env")
        values = {f: getattr(args, f, None) for f in names}
        values.update(overrides)
        return cls(**{k: v for k, v in values.items() if v is not None})


def load_completer(
    choice: ModelChoice, progress: Callable[[str], None] | None = None, calibrate: str = ""
) -> Completer:
    """Load `choice`'s model (and draft model) in this process. `calibrate` "probe": also
    build the controllers on the step costs known so far (cached, or a two-size probe;
    `Completer.calibrate_step` completes the calibration later, the server while idle);
    "full": complete the calibration now (benchmarks: the whole grid, however long).

    An "openai" backend is built without contacting a model: its tokenizer loads from files,
    then the server is asked which models it serves (`OpenAIBackend.probe`): a server that
    cannot be reached leaves `backend.problem` set (it is tried again per request, with
    backoff); a server that answers "no such model" raises `BackendError`."""
    if choice.backend == "openai":
        return Completer(load_remote(choice, progress))
    from ..local.backend import load_backend

    backend = load_backend(
        choice.model or None, choice.device, choice.dtype, choice.draft_model or None, progress=progress
    )
    completer = Completer(backend)
    if calibrate:
        if progress is not None:
            progress("probing step costs" if calibrate == "probe" else "measuring step costs")
        if calibrate == "full":
            completer.calibrate(budget_s=60.0, max_pass_s=10.0)
        completer.auto_policy()
    return completer


def load_remote(choice: ModelChoice, progress: Callable[[str], None] | None = None) -> Any:
    """The remote backend for `choice` (tokenizer from `choice.model`'s files)."""
    from ..backend import BackendError
    from ..local.registry import DEFAULT_MODEL, is_ready, resolve
    from ..remote.backend import OpenAIBackend, RemoteSettings, check_endpoint, load_tokenizer
    from .fim import stop_token_strings, token_strings

    if not choice.endpoint:
        raise BackendError("backend openai needs an endpoint, e.g. http://127.0.0.1:8000/v1")
    try:
        endpoint = check_endpoint(choice.endpoint)
    except ValueError as e:
        raise BackendError(str(e)) from None
    kind, directory = resolve(choice.model or DEFAULT_MODEL)
    if directory is None or (kind == "registry" and not is_ready(directory)):
        raise BackendError(
            f"the tokenizer of {choice.model or DEFAULT_MODEL} is not on this machine: "
            "`speclsp models pull NAME`, or set `model` to a directory with its tokenizer.json"
        )
    if progress is not None:
        progress(f"tokenizer from {directory}; asking {endpoint} for its models")
    settings = RemoteSettings(endpoint, choice.remote_model, choice.api_key_env)
    backend = OpenAIBackend(settings, load_tokenizer(directory), token_strings(), stop_token_strings())
    try:
        backend.probe()
    except BaseException:  # a wrong model name, a refused key: the backend is not returned, so close it here
        backend.close()
        raise
    return backend
