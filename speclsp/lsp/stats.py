"""The server's counters, and the `speclsp/stats` answer built from them (camelCase wire format)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ServerStats:
    completions: int = 0  # requests answered
    model_calls: int = 0  # generations started
    cache_hits: int = 0  # requests answered with text from an existing generation (no model call)
    cancelled: int = 0  # requests cancelled by the client ($/cancelRequest)
    superseded: int = 0  # requests dropped for a newer request or edit (debounce, stale)
    stale: int = 0  # answers dropped because the document changed
    empty: int = 0
    errors: int = 0  # generations that raised (their requests got empty answers)
    edits: int = 0
    new_tokens: int = 0
    decode_s: float = 0.0
    drafted: int = 0
    accepted: int = 0
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=512))  # request -> answer
    last: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        lat = sorted(self.latency_ms)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

        return {
            "completions": self.completions,
            "modelCalls": self.model_calls,
            "cacheHits": self.cache_hits,
            "cancelled": self.cancelled,
            "superseded": self.superseded,
            "stale": self.stale,
            "edits": self.edits,
            "errors": self.errors,
            "tokensPerSecond": round(self.new_tokens / self.decode_s, 2) if self.decode_s > 0 else 0.0,
            "acceptance": round(self.accepted / self.drafted, 4) if self.drafted else 0.0,
            "latencyMs": {"p50": pct(0.5), "p95": pct(0.95)},
            "last": self.last,
        }
