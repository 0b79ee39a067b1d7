"""Generations: one model run at one cursor, and the completion cache they form.

A generation is the in-flight request of its document and, kept (`Config.cached_completions`
per document), a cache entry. Its rules are plain data and plain functions, testable without
an event loop or a model:

- typed through: a request whose document is a generation's with part of its suggestion
  typed is served from it, showing the rest;
- typing ahead: while a generation runs, a request a few characters (`AHEAD_MAX`) past its
  text, where that text agrees with what was typed, waits for it instead of starting over
  (on a CPU-bound model the user often types what the model is about to write);
- visible text: what one request (a `Subscriber`) is shown, the same rule for answers and
  streaming updates;
- stale: an edit that leaves a running generation behind ends it.

The session (`session.py`) wakes waiters through `Generation.notify`, a hook it sets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..backend import CancelToken

AHEAD_MAX = 8  # characters a user may type past a running generation's text and still wait for it


@dataclass
class Subscriber:
    """One request served by a generation (the first, or later ones typed through it)."""

    request_id: Any
    version: int
    typed: int  # characters of the suggestion the user typed before this request
    typed_text: str  # those characters
    line: int  # position of this request, client units
    character: int
    edits: int = 0  # the document's edit count at the request
    answered: bool = False

    def outdated(self, version: int, edits: int) -> bool:
        """The document moved on since this request (a new version, or another edit)."""
        return version != self.version or edits != self.edits


class Generation:
    """One model run at one cursor: the in-flight request and, once done, a cache entry."""

    _ids = 0

    def __init__(self, uri: str, version: int, text: str, offset: int):
        Generation._ids += 1
        self.id = Generation._ids
        self.uri = uri
        self.version = version
        self.offset = offset
        self.prefix = text[:offset]
        self.suffix = text[offset:]
        self.text = ""  # the shown suggestion so far
        self.done = False
        self.stop_reason = ""
        self.cancel = CancelToken()
        self.subscribers: list[Subscriber] = []
        self.stats: dict[str, Any] = {}
        self.t_start = time.monotonic()
        self.t_first_text: float | None = None
        self.notify: Callable[[], None] = lambda: None  # set by whoever waits on it

    # --- the rules ------------------------------------------------------------------------

    def typed_through(self, prefix: str, suffix: str, ahead: bool = False) -> int | None:
        """How many characters of the suggestion the user has typed, if the document at
        a new cursor (`prefix` | `suffix`) is this one's with part of the suggestion typed.

        With `ahead`, a running generation also matches when the user has typed a little
        past the text it has so far (which must agree); further ahead than `AHEAD_MAX`, a
        fresh generation answers sooner.
        """
        if suffix != self.suffix or len(prefix) < len(self.prefix) or not prefix.startswith(self.prefix):
            return None
        typed = prefix[len(self.prefix) :]
        if not self.text.startswith(typed):
            if ahead and not self.done and typed.startswith(self.text) and len(typed) - len(self.text) <= AHEAD_MAX:
                return len(typed)
            return None
        if self.done and not self.text[len(typed) :].strip():
            return None  # nothing left to show: a fresh completion is needed
        return len(typed)

    def visible(self, sub: Subscriber) -> str:
        """What `sub` is shown: the suggestion past what it typed ("" while the user is
        ahead of the model, or where the model wrote something else)."""
        return self.text[sub.typed :] if self.text.startswith(sub.typed_text) else ""

    def diverged(self, sub: Subscriber) -> bool:
        """The model wrote something other than what `sub`'s user typed ahead."""
        return not self.text.startswith(sub.typed_text) and not sub.typed_text.startswith(self.text)

    def left_behind(self, text: str) -> bool:
        """Whether a document now reading `text` has left this suggestion behind (the user
        typed something it cannot serve, or edited elsewhere)."""
        keep = len(text) - len(self.suffix)
        return keep < 0 or self.typed_through(text[:keep], text[keep:], ahead=True) is None

    @property
    def latest(self) -> Subscriber | None:
        return self.subscribers[-1] if self.subscribers else None

    @property
    def usable(self) -> bool:
        """Can serve a new request: not failed, not being torn down, text or still running."""
        if self.done:
            return bool(self.text) and self.stop_reason != "error"
        return not self.cancel.cancelled

    # --- updates --------------------------------------------------------------------------

    def grow(self, text: str) -> bool:
        """New text from the model; True if it changed."""
        if text == self.text:
            return False
        self.text = text
        if text and self.t_first_text is None:
            self.t_first_text = time.monotonic()
        self.notify()
        return True

    def finish(self, stop_reason: str, stats: dict[str, Any] | None = None) -> None:
        self.done = True
        self.stop_reason = stop_reason
        self.stats = stats or {}
        self.notify()


class Generations:
    """The generations of every document, newest last: the completion cache."""

    def __init__(self, per_document: int = 4) -> None:
        self.per_document = per_document
        self._by_uri: dict[str, list[Generation]] = {}

    def find(self, uri: str, prefix: str, suffix: str) -> Generation | None:
        """The newest generation a request at `prefix` | `suffix` can be served from."""
        for gen in reversed(self._by_uri.get(uri, ())):
            if gen.usable and gen.typed_through(prefix, suffix, ahead=True) is not None:
                return gen
        return None

    def add(self, gen: Generation) -> None:
        gens = self._by_uri.setdefault(gen.uri, [])
        gens.append(gen)
        del gens[: -self.per_document]

    def of(self, uri: str) -> list[Generation]:
        return list(self._by_uri.get(uri, ()))

    def drop(self, uri: str) -> list[Generation]:
        """Forget `uri`'s generations (cancelling the running ones); returns them."""
        gens = self._by_uri.pop(uri, [])
        for gen in gens:
            gen.cancel.cancel()
            gen.notify()
        return gens

    def __iter__(self) -> Iterator[Generation]:
        for gens in list(self._by_uri.values()):
            yield from gens

    def uris(self) -> list[str]:
        return list(self._by_uri)

    def after_edit(self, uri: str, text: str) -> None:
        """`uri` now reads `text`: cancel the running generations it left behind, and wake
        every waiter so it re-checks its version."""
        for gen in self._by_uri.get(uri, ()):
            if not gen.done and gen.left_behind(text):
                gen.cancel.cancel()
            gen.notify()

    def idle_elsewhere(self, uri: str) -> list[Generation]:
        """Running generations of other documents that only fill the cache (every request
        they served is answered): a new generation for `uri` should not wait behind them."""
        return [
            g
            for u, gens in self._by_uri.items()
            if u != uri
            for g in gens
            if not g.done and all(s.answered for s in g.subscribers)
        ]
