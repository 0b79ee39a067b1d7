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
    drafted: int = 0  # drafted tokens (chains) and tree nodes verified
    accepted: int = 0
    forwards: int = 0  # verify passes after prefill
    tree_forwards: int = 0  # of which over a branching token tree
    # per draft source: {"drafted": nodes verified, "accepted": nodes on accepted paths}
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=512))  # request -> answer
    last: dict[str, Any] = field(default_factory=dict)

    def add_draft_stats(self, g: Any) -> None:
        """Count one generation's drafting (a `speclsp.backend.GenerationStats`)."""
        self.drafted += g.drafted
        self.accepted += g.accepted
        self.forwards += g.forwards
        self.tree_forwards += g.tree_forwards
        for src, d in g.draft_sources.items():
            mine = self.sources.setdefault(src, {"drafted": 0, "accepted": 0})
            mine["drafted"] += d["drafted"]
            mine["accepted"] += d["accepted"]

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
            # per verify pass: drafted tokens or tree nodes verified, and how many were kept
            "perForward": {
                "verified": round(self.drafted / self.forwards, 2) if self.forwards else 0.0,
                "accepted": round(self.accepted / self.forwards, 2) if self.forwards else 0.0,
                "treeForwards": self.tree_forwards,
            },
            "bySource": {
                src: {**d, "acceptance": round(d["accepted"] / d["drafted"], 4) if d["drafted"] else 0.0}
                for src, d in sorted(self.sources.items())
            },
            "latencyMs": {"p50": pct(0.5), "p95": pct(0.95)},
            "last": self.last,
        }
