"""The keystroke clock: how fast this user types in this document, and what that allows.

The lookahead controllers (`controller.py`) plan each verify step within the step budget
this clock gives, and the server sizes completions by how long the user has paused.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class KeystrokeClock:
    """Per-document typing pace from edit timestamps -> step budget and completion length.

    The typical inter-key interval is an EMA over intervals shorter than `pause_s` (longer
    gaps are pauses, not typing pace). While the user types (idle < `pause_s`), one verify
    step must fit in `step_fraction` of the typical interval so the next key can cancel
    promptly, and completions are short; once paused, steps may take up to `max_step_s`
    and completions grow linearly to `long_tokens` at 2 x `pause_s` idle. All times are
    passed in (seconds, any monotonic clock), so the class is deterministic.
    """

    alpha: float = 0.3
    pause_s: float = 1.0
    step_fraction: float = 0.8
    min_step_s: float = 0.05  # below this even k = 0 would not fit; never ask for less
    max_step_s: float = 1.0
    short_tokens: int = 16
    long_tokens: int = 128
    _last: dict[str, float] = field(default_factory=dict)
    _interval: dict[str, float] = field(default_factory=dict)

    def on_edit(self, uri: str, t: float) -> None:
        prev = self._last.get(uri)
        self._last[uri] = t
        if prev is None:
            return
        dt = t - prev
        if 0 <= dt < self.pause_s:
            old = self._interval.get(uri)
            self._interval[uri] = dt if old is None else (1 - self.alpha) * old + self.alpha * dt

    def forget(self, uri: str) -> None:
        self._last.pop(uri, None)
        self._interval.pop(uri, None)

    def interval(self, uri: str) -> float | None:
        """Typical seconds between keys in this document (None: not seen typing yet)."""
        return self._interval.get(uri)

    def idle(self, uri: str, now: float) -> float:
        last = self._last.get(uri)
        return float("inf") if last is None else max(0.0, now - last)

    def typing(self, uri: str, now: float) -> bool:
        return self.idle(uri, now) < self.pause_s and uri in self._interval

    def step_budget(self, uri: str, now: float) -> float:
        """Longest verify step (seconds) the controller may plan for this document now."""
        if not self.typing(uri, now):
            return self.max_step_s
        b = self.step_fraction * self._interval[uri]
        return min(self.max_step_s, max(self.min_step_s, b))

    def max_tokens(self, uri: str, now: float) -> int:
        """Completion length: short while typing fast, longer the longer the user pauses."""
        idle = self.idle(uri, now)
        if uri not in self._interval or idle >= 2 * self.pause_s:
            return self.long_tokens
        if idle <= self.pause_s:
            return self.short_tokens
        f = (idle - self.pause_s) / self.pause_s
        return int(round(self.short_tokens + f * (self.long_tokens - self.short_tokens)))
