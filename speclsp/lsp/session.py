"""Completion requests: find or start a generation, wait, answer. Nothing else.

One completion request:

    find a generation it can be served from    typed-through cache: no model call
    else debounce (adaptive; none if invoked)  a newer request or edit supersedes it
    start a generation on the worker           the older one for the document is cancelled
    wait: done, or the deadline with text      streaming clients get updates meanwhile
    drop it if the document changed since      exactly one answer either way

The state it works on (documents, indexes, clock, cache, model) is `state.ServerState`'s;
the cache rules are `generations.py`'s; the request itself is built by the completion
pipeline (`completion.completer.build_request`) and run by `Completer.complete` on the
model worker thread, which reports back with `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from ..backend import BackendError
from ..completion.completer import build_request
from ..completion.context import OpenDocument, PromptBudget
from .documents import Document, brief
from .generations import Generation, Subscriber
from .job import Cursor, GenerationJob, locate, run_job
from .scheduler import document_key
from .state import ServerState

log = logging.getLogger(__name__)

GENERATION_TIME_CAP_S = 10.0  # no completion occupies the model longer than this
CANCEL_GRACE_S = 0.25  # a cancelled request's generation waits this long for a typed-through successor


def debounce_s(interval: float | None, invoked: bool) -> float:
    """How long to wait before starting the model for an automatic request.

    Long enough that the next keystroke of a user in a burst usually arrives first (and
    supersedes this request instead of cancelling a started prefill), short enough to add
    little latency; no wait after a pause, and none when the user asked explicitly.
    """
    if invoked:
        return 0.0
    if interval is None:
        return 0.02
    if interval > 0.6:  # slow, deliberate typing: every keystroke may be the last
        return 0.0
    return min(0.25, 0.75 * interval)


@dataclass(frozen=True)
class Answer:
    """What a completion request gets: text to insert at the cursor, or "" and why not."""

    text: str
    reason: str  # "model", "cache", or why there is nothing: "not_ready", "stale", ...
    line: int = 0  # the cursor, client units
    character: int = 0
    word_start: int = 0  # client units: where the word being typed starts on the line
    word: str = ""  # that word (the text between word_start and the cursor)
    version: int = 0


EMPTY = Answer("", "")


class Session:
    """Answers completion requests from the state, the cache and the model."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._events: dict[int, asyncio.Event] = {}  # generation id -> wakes its waiters

    async def complete(self, uri: str, line: int, character: int, *, request_id: Any, invoked: bool = False) -> Answer:
        """Answer one completion request at (line, character) in client units."""
        st = self.state
        t0 = time.monotonic()
        if uri in st.documents:  # a request for a document that is not open leaves nothing behind
            st.latest_request[uri] = request_id
        answer, gen = EMPTY, None
        try:
            answer, gen = await self._complete(uri, line, character, request_id, invoked)
        except asyncio.CancelledError:
            st.stats.cancelled += 1
            log.info("req %s cancelled by the client after %.0f ms", request_id, (time.monotonic() - t0) * 1e3)
            raise
        ms = (time.monotonic() - t0) * 1e3
        st.stats.completions += 1
        st.stats.latency_ms.append(ms)
        if not answer.text:
            st.stats.empty += 1
        self._log_answer(request_id, answer, gen, ms)
        return answer

    async def _complete(
        self, uri: str, line: int, character: int, request_id: Any, invoked: bool
    ) -> tuple[Answer, Generation | None]:
        st = self.state
        doc = st.documents.get(uri)
        refused = self._refuse(doc, uri, line, request_id)
        if refused is not None or doc is None:
            return refused or EMPTY, None
        cur = locate(doc, line, character, st.encoding)
        sub = Subscriber(request_id, doc.version, 0, "", line, cur.character, edits=doc.edits)
        gen = self._from_cache(uri, cur, sub)
        reason = "cache"
        if gen is None:
            early = await self._debounce(doc, sub, request_id, invoked, cur)
            if early is not None:
                return early, None
            gen, reason = self._start_generation(doc, cur.offset, invoked), "model"
            gen.subscribers.append(sub)
        gen, sub, reason = await self._wait_or_restart(gen, sub, doc, cur, request_id, invoked, reason)
        return self._answer(gen, sub, doc, cur, request_id, reason), gen

    def _refuse(self, doc: Document | None, uri: str, line: int, request_id: Any) -> Answer | None:
        """Why there is no completion before looking at the text, or None."""
        st = self.state
        if doc is None:
            return replace(EMPTY, reason="not_open")
        if not st.config.enabled_for(doc.language_id):
            return replace(EMPTY, reason="disabled")
        if doc.too_large:
            log.info(
                "req %s: %s is over maxDocumentChars (%d > %d): no completion",
                request_id,
                brief(uri),
                len(doc.text),
                st.config.max_document_chars,
            )
            return replace(EMPTY, reason="too_large")
        if line >= len(doc.lines):
            log.warning(
                "req %s: line %d is past the end of %s (%d lines)", request_id, line, brief(uri), len(doc.lines)
            )
            return replace(EMPTY, reason="bad_position")
        return None

    def _from_cache(self, uri: str, cur: Cursor, sub: Subscriber) -> Generation | None:
        """A kept or running generation the user typed into, now serving `sub` too."""
        gen = self.state.generations.find(uri, cur.prefix, cur.suffix)
        if gen is not None:
            sub.typed = len(cur.prefix) - len(gen.prefix)
            sub.typed_text = cur.prefix[len(gen.prefix) :]
            gen.subscribers.append(sub)
        return gen

    async def _debounce(
        self, doc: Document, sub: Subscriber, request_id: Any, invoked: bool, cur: Cursor
    ) -> Answer | None:
        """Before a model call: no model yet, or a newer request or edit during the
        debounce, answers at once (returned); None: start the generation."""
        st = self.state
        delay = debounce_s(st.clock.interval(doc.uri), invoked)
        if delay > 0 and st.model.ready:
            await asyncio.sleep(delay)
            if st.latest_request.get(doc.uri) != request_id or self._outdated(sub, doc):
                st.stats.superseded += 1
                return replace(EMPTY, reason="superseded", **cur.where())
        if not st.model.ready:  # also after the debounce: a reload may have started during it
            log.info("req %s: no completion, model %s (%s)", request_id, st.model.state, st.model.message)
            return replace(EMPTY, reason=f"model_{st.model.state}")
        return None

    async def _wait_or_restart(
        self, gen: Generation, sub: Subscriber, doc: Document, cur: Cursor, request_id: Any, invoked: bool, reason: str
    ) -> tuple[Generation, Subscriber, str]:
        """Wait for text to answer with; a cached generation the user typed ahead of that
        then wrote something else is replaced by a generation of this request's own."""
        st = self.state
        try:
            await self._wait(gen, sub, doc, repeat=reason == "cache")
            if (
                reason == "cache"
                and gen.diverged(sub)
                and not self._outdated(sub, doc)
                and st.latest_request.get(doc.uri) == request_id
                and st.model.ready
            ):
                gen = self._start_generation(doc, cur.offset, invoked)
                sub.answered = True
                sub = replace(sub, typed=0, typed_text="", answered=False)
                gen.subscribers.append(sub)
                reason = "model"
                await self._wait(gen, sub, doc, repeat=False)
        except asyncio.CancelledError:
            if gen.latest is sub and not gen.done:
                # Editors cancel the previous request on every keystroke, just before they
                # ask again; if the next request types through this suggestion it carries
                # on. If none does within the grace period, stop the model.
                st.loop.call_later(CANCEL_GRACE_S, self._cancel_if_unwanted, gen, sub)
            raise
        finally:
            sub.answered = True
            # Keep the requests still waiting and the newest: a generation served by many
            # typed-through requests must not keep every id it ever saw.
            gen.subscribers = [s for s in gen.subscribers if not s.answered or s is gen.latest]
        return gen, sub, reason

    def _answer(
        self, gen: Generation, sub: Subscriber, doc: Document, cur: Cursor, request_id: Any, reason: str
    ) -> Answer:
        """The text this request gets now, or why none."""
        st = self.state
        where = cur.where()
        if self._outdated(sub, doc) or st.documents.get(doc.uri) is not doc:
            st.stats.stale += 1
            return replace(EMPTY, reason="stale", **where)
        if gen.done and gen.stop_reason in ("cancelled", "superseded") and st.latest_request.get(doc.uri) != request_id:
            st.stats.superseded += 1  # a newer request moved on: this partial text is outdated
            return replace(EMPTY, reason="superseded", **where)
        text = gen.visible(sub)
        if not text.strip():
            return replace(EMPTY, reason=gen.stop_reason or "empty", **where)
        if reason == "cache":
            st.stats.cache_hits += 1  # answered with text, and no model call of its own
        return Answer(text=text, reason=reason, **where)

    @staticmethod
    def _outdated(sub: Subscriber, doc: Document) -> bool:
        return sub.outdated(doc.version, doc.edits)

    def _cancel_if_unwanted(self, gen: Generation, sub: Subscriber) -> None:
        if gen.latest is sub and not gen.done:
            log.info("gen %d: cancelled request %s not followed by a matching one; stopping", gen.id, sub.request_id)
            gen.cancel.cancel()

    # --- waiting --------------------------------------------------------------------------

    def _watch(self, gen: Generation) -> None:
        """Let `_changed` wait on `gen`: every update of it sets a fresh event."""
        self._events[gen.id] = asyncio.Event()

        def wake() -> None:
            event = self._events.get(gen.id)
            if event is not None:
                event.set()
                self._events[gen.id] = asyncio.Event()

        gen.notify = wake

    async def _changed(self, gen: Generation, timeout: float | None) -> None:
        event = self._events.get(gen.id)
        if event is None:
            return
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass

    async def _wait(self, gen: Generation, sub: Subscriber, doc: Document, repeat: bool) -> None:
        """Until the generation is done, or there is text and (a repeat request or the deadline)."""
        deadline_s = self.state.config.deadline_ms / 1e3
        deadline = time.monotonic() + deadline_s if deadline_s > 0 else None
        while not gen.done:
            if gen.diverged(sub):
                return  # the model wrote something else than the user typed ahead
            if self._outdated(sub, doc) or gen.latest is not sub:
                return  # outdated or superseded by a newer request on this generation
            visible = gen.visible(sub).strip()
            now = time.monotonic()
            if visible and (repeat or (deadline is not None and now >= deadline)):
                return
            timeout = max(0.0, deadline - now) if deadline is not None and now < deadline else None
            await self._changed(gen, timeout)

    # --- generations ----------------------------------------------------------------------

    def _start_generation(self, doc: Document, offset: int, invoked: bool) -> Generation:
        st = self.state
        cfg = st.config
        completer = st.model.completer
        gen = Generation(doc.uri, doc.version, doc.text, offset)
        log.info("gen %d: started for %s at offset %d", gen.id, brief(doc.uri), offset)
        self._watch(gen)
        st.generations.add(gen)
        # Another document's generation that only fills the cache must not hold up this one.
        for other in st.generations.idle_elsewhere(doc.uri):
            other.cancel.cancel()
        now = time.monotonic()
        # While the user types, steps must fit between keystrokes and completions are
        # short (so they finish and the typed-through cache can serve the next keys).
        req = build_request(
            doc.path,
            doc.text,
            doc.lines.starts,
            offset,
            others=(OpenDocument(d.path, d.text) for d in st.documents.others(doc)),
            max_tokens=cfg.max_tokens if invoked else min(cfg.max_tokens, st.clock.max_tokens(doc.uri, now)),
            lookahead=cfg.lookahead,
            drafter=cfg.drafter_kind if "model" in completer.backend.drafter_kinds else "ngram",
            time_budget_s=GENERATION_TIME_CAP_S,
            step_budget_s=None if invoked else st.clock.step_budget(doc.uri, now),
            budget=PromptBudget(max_prompt_tokens=cfg.context_budget, context_tokens=min(512, cfg.context_budget // 4)),
            lf_only=st.lf_only,
        )
        job = GenerationJob(gen.id, doc.uri, offset, req, st.indexer.mark(), st.policy)
        log.debug("%s", job.describe())
        loop = st.loop
        st.stats.model_calls += 1

        def on_text(text: str) -> None:  # on the model thread, after each step
            loop.call_soon_threadsafe(self._grow, gen, text)

        run = functools.partial(run_job, job, completer, st.indexer, st.indexes, on_text)
        fut = st.worker.submit(document_key(doc.uri), run, gen.cancel)
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(self._finished, gen, f))
        return gen

    def _grow(self, gen: Generation, text: str) -> None:
        gen.grow(text)
        doc = self.state.documents.get(gen.uri)
        if doc is not None and doc.version != gen.version and gen.left_behind(doc.text):
            gen.cancel.cancel()  # the user typed ahead, and the model now disagrees
        self._stream(gen)

    def _finished(self, gen: Generation, fut) -> None:
        st = self.state
        if fut.cancelled():
            gen.finish("superseded")
        elif (exc := fut.exception()) is not None:
            log.error("generation %d failed: %s: %s", gen.id, type(exc).__name__, str(exc)[:200])
            st.stats.errors += 1
            gen.grow("")  # no half-written suggestion: what streamed so far is taken back
            gen.finish("error")
            if isinstance(exc, BackendError):
                st.model.failed(str(exc), exc.kind)
        else:
            st.model.served()
            comp = fut.result()
            gen.grow(comp.text)
            stats = comp.stats
            gen.finish(stats.stop_reason, stats.to_dict())
            s = st.stats
            if stats.new_tokens > 1:  # decode speed: tokens after the first over the time after it
                s.new_tokens += stats.new_tokens - 1
                s.decode_s += max(0.0, stats.total_ms - stats.ttft_ms) / 1e3
            s.add_draft_stats(stats)
            s.last = {**gen.stats, "requestId": gen.subscribers[0].request_id if gen.subscribers else None}
            if gen.uri in st.documents and comp.text:
                st.remember(gen.uri, comp.text)
        self._stream(gen)
        self._events.pop(gen.id, None)

    def _stream(self, gen: Generation) -> None:
        """Send the latest request of `gen` the suggestion so far, if its client streams."""
        st = self.state
        if not (st.streaming_opt_in and st.config.streaming):
            return
        sub = gen.latest
        doc = st.documents.get(gen.uri)
        if sub is None or doc is None or self._outdated(sub, doc):
            return  # nobody is looking at this version any more
        text = gen.visible(sub)
        if not text and not gen.done:
            return  # the user is ahead of the model: nothing to show yet
        st.client.inline_update(gen.uri, sub.version, sub.line, sub.character, text, gen.done, sub.request_id)

    def _log_answer(self, request_id: Any, answer: Answer, gen: Generation | None, ms: float) -> None:
        if gen is None:
            log.info("req %s: empty (%s) in %.1f ms", request_id, answer.reason, ms)
            return
        first = (gen.t_first_text - gen.t_start) * 1e3 if gen.t_first_text else None
        s = gen.stats
        log.info(
            "req %s gen %d: %s, %d chars, %s in %.1f ms (first text %s ms, prefill %s ms, tokens %s, "
            "forwards %s, accepted %s/%s, stop %s)",
            request_id,
            gen.id,
            answer.reason,
            len(answer.text),
            "done" if gen.done else "partial",
            ms,
            f"{first:.0f}" if first is not None else "-",
            s.get("prefill_ms", "-"),
            s.get("new_tokens", "-"),
            s.get("forwards", "-"),
            s.get("accepted", "-"),
            s.get("drafted", "-"),
            gen.stop_reason or "running",
        )
        log.debug("req %s text: %r", request_id, answer.text)
