"""Server options: one fully defaulted dataclass, parsed from what editors send.

Editors send options as camelCase JSON, in `initializationOptions` and (under
`settings.speclsp`) in `workspace/didChangeConfiguration`. `parse_options` overlays the keys
present onto a base `Config` and never raises: a bad value becomes a warning naming the key
(the server shows it with `window/showMessage`) and that key keeps its previous value.
Unknown keys are warned about too, so a typo does not silently do nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..drafting.controller import parse_lookahead
from ..drafting.drafter import parse_drafter
from ..drafting.index import DEFAULT_MAX_TOKENS
from ..local.registry import DEFAULT_MODEL

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "bfloat16", "float16", "float32", "int8")
BACKENDS = ("local", "openai")


@dataclass(frozen=True)
class Config:
    model: str = DEFAULT_MODEL  # registered name, local directory, .gguf or HF id
    device: str = "auto"
    dtype: str = "auto"
    max_tokens: int = 64  # per completion; each costs at least one verify pass without drafts
    lookahead: str = "tree"  # tree | auto | heuristic | fixed:K
    # A smaller model with the same tokenizer that drafts when n-grams have nothing good
    # (local/draft_model.py). Off by default: on CPU its own cost ate the gain (docs/benchmarks.md).
    draft_model: str = ""
    drafter: str = ""  # ngram | model | hybrid; "" = hybrid with a draft model, else ngram
    # Where generation runs: "local" (this process) or "openai" (an OpenAI-compatible server
    # such as vLLM; docs/deploy.md). With "openai", `model` only names the tokenizer's files.
    backend: str = "local"
    endpoint: str = ""  # openai: the API's base URL, e.g. http://127.0.0.1:8000/v1
    remote_model: str = ""  # openai: the served model's name; "" = the server's first
    # openai: the NAME of an environment variable holding the key, never the key itself, so
    # it stays out of settings files; it is sent to the endpoint only, and never logged.
    api_key_env: str = ""
    # Send speclsp/inlineCompletionUpdate to clients that opted in (docs/protocol.md).
    streaming: bool = True
    context_budget: int = 2048  # prompt tokens in total: prefill cost grows with it
    languages: Mapping[str, bool] = field(default_factory=dict)  # {"markdown": False, "*": False}
    enabled: bool = True
    # An inline completion is answered when generation ends or, with text to show, after
    # this long; generation goes on and a repeat request (or a streaming client) gets the
    # rest. 1.5 s is about where a suggestion stops being useful while typing.
    deadline_ms: int = 1500
    # Caps that bound time and memory whatever the editor opens (docs/reliability.md).
    # A longer document is kept in sync but neither indexed nor completed (its completion
    # is empty, with a log line): indexing and prompt building cost time and memory in
    # proportion to its length. 1M characters is ~25k lines, above any hand-written file.
    max_document_chars: int = 1_000_000
    # Tokens each workspace folder's n-gram index holds before it evicts the least
    # recently used documents (drafting.index.NgramIndex.max_tokens). Measured ~500 bytes
    # per indexed token (`speclsp bench index`), so 500k tokens (~40k lines) is ~250 MB.
    index_max_tokens: int = DEFAULT_MAX_TOKENS
    cached_completions: int = 4  # finished completions kept per document (typing-through cache)

    def enabled_for(self, language_id: str | None) -> bool:
        if not self.enabled:
            return False
        if language_id and language_id in self.languages:
            return bool(self.languages[language_id])
        return bool(self.languages.get("*", True))

    @property
    def model_key(self) -> tuple[str, ...]:
        """What decides which model is loaded: a change means a reload."""
        return (
            self.model,
            self.device,
            self.dtype,
            self.draft_model,
            self.backend,
            self.endpoint,
            self.remote_model,
            self.api_key_env,
        )

    @property
    def drafter_kind(self) -> str:
        return self.drafter or ("hybrid" if self.draft_model else "ngram")


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


_KEYS = {camel(f.name): f.name for f in fields(Config)}
_INT_RANGES = {
    "max_tokens": (1, 1024),
    "context_budget": (64, 32768),
    "deadline_ms": (0, 60000),
    "max_document_chars": (1000, 100_000_000),
    "index_max_tokens": (10_000, 100_000_000),
    "cached_completions": (1, 64),
}


def _check(key: str, value: Any) -> Any:
    """The value to store for `key`, or raise ValueError saying what is wrong."""
    if key == "draft_model":
        if not isinstance(value, str):
            raise ValueError("expected a string (empty: no draft model)")
        return value.strip()
    if key == "drafter":
        if not isinstance(value, str):
            raise ValueError("expected one of ngram, model, hybrid")
        return parse_drafter(value) if value.strip() else ""
    if key == "backend":
        if value not in BACKENDS:
            raise ValueError(f"expected one of {', '.join(BACKENDS)}")
        return value
    if key == "endpoint":
        if not isinstance(value, str) or (value.strip() and not value.strip().startswith(("http://", "https://"))):
            raise ValueError("expected http(s)://HOST[:PORT]/v1")
        return value.strip()
    if key in ("remote_model", "api_key_env"):
        if not isinstance(value, str):
            raise ValueError("expected a string")
        if key == "api_key_env" and value.strip() and not value.strip().replace("_", "a").isalnum():
            raise ValueError("expected the NAME of an environment variable (letters, digits, _), not a key")
        return value.strip()
    if key in ("model", "lookahead"):
        if not isinstance(value, str) or not value.strip():
            raise ValueError("expected a non-empty string")
        if key == "lookahead":
            parse_lookahead(value)  # raises ValueError with the reason
        return value.strip()
    if key == "device":
        if not isinstance(value, str) or not (value in DEVICES or (value.startswith("cuda:") and value[5:].isdigit())):
            raise ValueError(f"expected one of {', '.join(DEVICES)} or cuda:N")
        return value
    if key == "dtype":
        if value not in DTYPES:
            raise ValueError(f"expected one of {', '.join(DTYPES)}")
        return value
    if key in ("streaming", "enabled"):
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if key in _INT_RANGES:
        low, high = _INT_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected an integer in {low}..{high}")
        return value
    if key == "languages":
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, bool) for k, v in value.items()
        ):
            raise ValueError('expected an object of language id -> true/false, e.g. {"markdown": false}')
        return dict(value)
    raise AssertionError(key)


def _short(value: Any, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters: warnings are shown to the user and logged, and
    a client may send a megabyte as an option's key or value."""
    text = repr(value) if not isinstance(value, (dict, list)) else repr(value)[: limit + 1]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_options(raw: Any, base: Config | None = None) -> tuple[Config, list[str]]:
    """Overlay the options in `raw` onto `base`; returns the config and warnings."""
    base = base or Config()
    if raw is None:
        return base, []
    if not isinstance(raw, Mapping):
        return base, [f"speclsp options must be an object, got {type(raw).__name__}; using defaults"]
    changes: dict[str, Any] = {}
    warnings: list[str] = []
    for key, value in raw.items():
        name = _KEYS.get(key)
        if name is None:
            warnings.append(f"speclsp: unknown option {_short(key)} ignored (known: {', '.join(sorted(_KEYS))})")
            continue
        if value is None:
            continue  # editors send null for "not set"
        try:
            changes[name] = _check(name, value)
        except ValueError as e:
            # A key pasted into apiKeyEnv by mistake must not end up in a message or a log.
            shown = "(not shown)" if name == "api_key_env" else _short(value)
            warnings.append(f"speclsp: bad value for {_short(key)}: {shown}: {e}; using {_short(getattr(base, name))}")
    return replace(base, **changes), warnings


def settings_section(settings: Any) -> Any:
    """`settings.speclsp` from a didChangeConfiguration payload.

    A flat object is taken as the options only if every key is one of ours; anything else
    (another tool's settings, null) holds no speclsp options.
    """
    if not isinstance(settings, Mapping):
        return None
    if "speclsp" in settings:
        return settings["speclsp"]
    return settings if settings and all(k in _KEYS for k in settings) else None
