"""The server's mutable state, and the completion flow around the model worker.

The session owns: open documents (text, version, language) with incremental edits; the
workspace folders and their n-gram indexes (`Drafting`, fed by every edit); the keystroke
clock (controller.KeystrokeClock, fed by every edit); the lookahead policy; the model's state (loading/ready/error) and its `Completer`; the generations, which
are both the in-flight request per document and the completion cache; statistics.

It runs on the server's event loop (one thread), except for model work, which runs on the
`ModelWorker` thread and reports back with `loop.call_soon_threadsafe`. It knows nothing of
lsprotocol: positions arrive as (line, units) in the negotiated encoding, answers leave as
plain dataclasses, and the client is reached through the `ClientChannel` protocol.

One completion request:

    find a generation it can be served from    typed-through cache: no model call
    else debounce (adaptive; none if invoked)  a newer request or edit supersedes it
    start a generation on the worker           the older one for the document is cancelled
    wait: done, or the deadline with text      streaming clients get updates meanwhile
    drop it if the document changed since      exactly one answer either way
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol, Sequence

from . import __version__
from .config import Config, parse_options
from .context import CHARS_PER_TOKEN, PREFIX_LINE_STEP, OpenDocument, PromptBudget
from .controller import KeystrokeClock, LookaheadPolicy
from .drafter import Drafter, PromptLookupDrafter
from .ngram import WorkspaceIndexes
from .engine import CancelToken
from .positions import UTF16, Lines, from_codepoints
from .scheduler import ModelWorker

log = logging.getLogger(__name__)

_WORD_TAIL = re.compile(r"\w+$")
MAX_OTHER_DOCUMENTS = 16  # most recently edited documents offered as prompt context
MAX_OTHER_CHARS = 2_000_000  # and at most this much of their text (snippet search scans it all)
GENERATION_TIME_CAP_S = 10.0  # no completion occupies the model longer than this
AHEAD_MAX = 8  # characters a user may type past a running generation's text and still wait for it
CANCEL_GRACE_S = 0.25  # a cancelled request's generation waits this long for a typed-through successor
# TEST-ONLY fault injection, off unless the variable is set: "generate-if-contains:MARKER"
# makes a generation raise when its document contains MARKER, so tests can check that a
# failing generation fails its own request only (tests/test_reliability_faults.py).
FAULT_INJECT_ENV = "SPECLSP_FAULT_INJECT"


def prompt_window(text: str, starts: Sequence[int], offset: int, budget_tokens: int) -> tuple[int, int]:
    """The slice [start, end) of `text` that the prompt for a cursor at `offset` can use.

    Building a prompt tokenizes what it is given, so a 1 MB document (or one long line)
    must not be handed over whole. The slice starts on a line that is a multiple of
    PREFIX_LINE_STEP and holds at least twice the characters the prefix budget can take and
    the 12 lines before the cursor, so `context.build_prompt` chooses exactly the prompt it
    would choose from the whole text. Only when those lines are themselves enormous does
    the slice start inside a line. `starts` are the text's line starts (positions.Lines).
    """
    need = 2 * budget_tokens * CHARS_PER_TOKEN
    end = min(len(text), offset + need)
    if offset <= need:
        return 0, end
    from bisect import bisect_right

    cursor_line = bisect_right(starts, offset) - 1
    line = min(bisect_right(starts, offset - need) - 1, max(0, cursor_line - 12))
    line -= line % PREFIX_LINE_STEP
    start = starts[line]
    if offset - start > 4 * need:  # very long lines: cut inside one
        start = offset - need
    return start, end


# --- small state holders --------------------------------------------------------------------


class ClientChannel(Protocol):
    """What the session may send to the editor (the server implements it)."""

    def status(self, state: str, message: str) -> None: ...

    def progress(self, kind: str, message: str) -> None:
        """kind: "begin", "report" or "end"."""

    def inline_update(self, payload: dict[str, Any]) -> None: ...

    def warn(self, message: str) -> None: ...


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


@dataclass
class Document:
    uri: str
    path: str
    language_id: str
    version: int
    text: str
    folder: str | None  # the workspace folder holding it (longest prefix), None if none
    edited_at: float = field(default_factory=time.monotonic)
    too_large: bool = False  # over Config.max_document_chars: in sync, not indexed or completed
    edits: int = 0  # didChange notifications applied: tells edits apart when a client reuses a version
    _lines: Lines | None = None

    @property
    def lines(self) -> Lines:
        if self._lines is None or self._lines.text is not self.text:
            self._lines = Lines(self.text)
        return self._lines


class Drafting:
    """Where drafts come from: the workspace n-gram index (ngram.py), fed by every edit.

    The index tokenizes with the model's tokenizer, so it is built when a model is loaded
    (documents opened before are indexed then) and rebuilt if the model changes. Before
    that there is nothing to draft for anyway. One index per workspace folder; accepted
    and generated completions join the history of their document's folder.
    """

    def __init__(self) -> None:
        self.indexes: WorkspaceIndexes | None = None
        self.folders: list[str] = []
        self._encode: Callable[[str], list[int]] | None = None
        self._fim: dict[str, int | None] = {}

    def attach(self, lm: Any, documents: Sequence["Document"], max_tokens: int = 2_000_000) -> None:
        """Index `documents` with `lm`'s tokenizer (a new model: a new index)."""
        t0 = time.perf_counter()
        self.indexes = WorkspaceIndexes(lm.tokenizer, self.folders, max_tokens=max_tokens)
        self._encode = lm.encode
        self._fim = {"suffix": lm.fim.get("<|fim_suffix|>"), "middle": lm.fim.get("<|fim_middle|>")}
        for doc in documents:
            self.indexes.open(doc.uri, doc.text)
        log.info("indexed %d open documents in %.0f ms", len(documents), (time.perf_counter() - t0) * 1e3)

    def set_max_tokens(self, max_tokens: int) -> None:
        """A new index size cap: applies at once to every folder's index (evicting on the next edit)."""
        if self.indexes is not None:
            self.indexes.max_tokens = max_tokens
            for ix in self.indexes.indexes():
                ix.max_tokens = max_tokens

    def set_folders(self, folders: Sequence[str]) -> None:
        self.folders = list(folders)
        if self.indexes is not None:
            self.indexes.set_folders(self.folders)

    def open(self, doc: "Document") -> None:
        if self.indexes is not None and not doc.too_large:
            self.indexes.open(doc.uri, doc.text)

    def edit(self, doc: "Document", start: int, end: int, new_text: str) -> None:
        if self.indexes is None or doc.too_large:
            return
        try:
            ok = self.indexes.edit(doc.uri, start, end, new_text)
        except ValueError as e:  # the index's copy disagrees with ours: start over from ours
            log.warning("index edit failed (%s); re-indexing %s", e, doc.uri)
            ok = False
        if not ok:  # evicted (or failed): index the whole document again
            self.indexes.open(doc.uri, doc.text)

    def close(self, uri: str) -> None:
        if self.indexes is not None:
            self.indexes.close(uri)

    def add_history(self, uri: str, text: str) -> None:
        if self.indexes is not None and self._encode is not None and text.strip():
            self.indexes.add_history(uri, self._encode(text))

    def drafter(self, uri: str, cursor: int) -> Drafter:
        if self.indexes is None:
            return PromptLookupDrafter()
        return self.indexes.drafter_for(uri, cursor, fim_suffix_id=self._fim.get("suffix"),
                                        fim_middle_id=self._fim.get("middle"))


@dataclass
class Subscriber:
    """One request served by a generation (the first, or later ones typed through it)."""

    request_id: Any
    version: int
    typed: int  # characters the user typed into the suggestion before this request
    typed_text: str
    line: int  # position of this request, client units
    character: int
    answered: bool = False
    edits: int = 0  # the document's edit count at the request

    def outdated(self, doc: "Document") -> bool:
        return doc.version != self.version or doc.edits != self.edits


class Generation:
    """One model run at one cursor: the in-flight request and, once done, a cache entry."""

    _ids = 0

    def __init__(self, doc: Document, offset: int):
        Generation._ids += 1
        self.id = Generation._ids
        self.uri = doc.uri
        self.version = doc.version
        self.offset = offset
        self.prefix = doc.text[:offset]
        self.suffix = doc.text[offset:]
        self.text = ""  # the shown suggestion so far
        self.done = False
        self.stop_reason = ""
        self.cancel = CancelToken()
        self.subscribers: list[Subscriber] = []
        self.stats: dict[str, Any] = {}
        self.t_start = time.monotonic()
        self.t_first_text: float | None = None
        self.t_done: float | None = None
        self._event = asyncio.Event()

    def typed_through(self, prefix: str, suffix: str, ahead: bool = False) -> int | None:
        """How many characters of the suggestion the user has typed, if the document at
        a new cursor (`prefix` | `suffix`) is this one's with part of the suggestion typed.

        With `ahead`, a running generation also matches when the user has typed a little
        past the text it has so far (which must agree): on a slow model the user often
        types what the model is about to write, and restarting on every keystroke would
        throw all its work away, so nothing would ever show while the user types. Further
        ahead than `AHEAD_MAX`, a fresh generation answers sooner.
        """
        if suffix != self.suffix or len(prefix) < len(self.prefix) or not prefix.startswith(self.prefix):
            return None
        typed = prefix[len(self.prefix) :]
        if not self.text.startswith(typed):
            if (ahead and not self.done and typed.startswith(self.text)
                    and len(typed) - len(self.text) <= AHEAD_MAX):
                return len(typed)
            return None
        if self.done and not self.text[len(typed) :].strip():
            return None  # nothing left to show: a fresh completion is needed
        return len(typed)

    def grow(self, text: str) -> None:
        if text == self.text:
            return
        self.text = text
        if text and self.t_first_text is None:
            self.t_first_text = time.monotonic()
        self.poke()

    def finish(self, stop_reason: str, stats: dict[str, Any] | None = None) -> None:
        self.done = True
        self.stop_reason = stop_reason
        self.stats = stats or {}
        self.t_done = time.monotonic()
        self.poke()

    def poke(self) -> None:
        """Wake whoever waits on this generation so they look at it again."""
        self._event.set()
        self._event = asyncio.Event()

    async def changed(self, timeout: float | None) -> None:
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    @property
    def latest(self) -> Subscriber | None:
        return self.subscribers[-1] if self.subscribers else None


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


# --- the session ----------------------------------------------------------------------------


class Session:
    """All mutable server state; every method runs on the event loop thread."""

    def __init__(self, base_config: Config, client: ClientChannel, *, load_model: Callable[..., Any] | None = None):
        self.config = base_config
        self.client = client
        self.encoding = UTF16
        self.streaming_opt_in = False
        self.documents: dict[str, Document] = {}
        self.folders: list[str] = []
        self.drafting = Drafting()
        self.clock = KeystrokeClock()
        self.policy: LookaheadPolicy | None = None  # long-lived: the auto controller learns
        self.worker = ModelWorker()
        self.stats = ServerStats()
        self.generations: dict[str, list[Generation]] = {}  # per document, newest last
        self.fault_inject = os.environ.get(FAULT_INJECT_ENV, "")  # test-only; see FAULT_INJECT_ENV
        self._latest_request: dict[str, Any] = {}
        self._load_model = load_model  # model.load, injectable for tests
        self.completer = None  # speclsp.completer.Completer once loaded
        self.model_state = "loading"
        self.model_message = "not started"
        self.device = ""
        self._loading_key: tuple[str, ...] | None = None
        self._loaded_key: tuple[str, ...] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # --- lifecycle and configuration ------------------------------------------------------

    def initialize(self, options: Any, encoding: str, folders: Sequence[str], streaming_capability: bool) -> list[str]:
        """Apply `initialize`: options, position encoding, folders. Returns warnings."""
        self.encoding = encoding
        self.config, warnings = parse_options(options, self.config)
        explicit = isinstance(options, dict) and options.get("streaming") is True
        self.streaming_opt_in = streaming_capability or explicit
        for uri in folders:
            self.add_folder(uri)
        log.info("initialize: encoding=%s streaming=%s folders=%d model=%s", encoding,
                 self.streaming_opt_in, len(folders), self.config.model)
        return warnings

    def change_configuration(self, options: Any) -> list[str]:
        """Overlay new options; reload the model if model, device or dtype changed."""
        old = self.config
        self.config, warnings = parse_options(options, self.config)
        if self.config.lookahead != old.lookahead and self.completer is not None:
            self.policy = self._make_policy()
        if self.config.index_max_tokens != old.index_max_tokens:
            self.drafting.set_max_tokens(self.config.index_max_tokens)
        if self.config.max_document_chars != old.max_document_chars:
            for doc in self.documents.values():
                self._check_size(doc)
        log.info("configuration changed: model=%s maxTokens=%d lookahead=%s streaming=%s enabled=%s",
                 self.config.model, self.config.max_tokens, self.config.lookahead, self.config.streaming, self.config.enabled)
        if self._loading_key is not None and self.config.model_key != self._loading_key:
            self.start_loading()
        return warnings

    @property
    def loading_started(self) -> bool:
        return self._loading_key is not None

    def start_loading(self) -> None:
        """Load (or reload) the configured model on the worker thread, in the background."""
        cfg = self.config
        key = cfg.model_key
        self._loading_key = key
        self.model_state, self.model_message = "loading", f"loading {cfg.model}"
        self.completer = None
        for uri in list(self.generations):
            self.worker.cancel(uri)
        self.client.status("loading", self.model_message)
        self.client.progress("begin", self.model_message)
        loop = self.loop

        def say(msg: str) -> None:
            log.info("model: %s", msg)
            loop.call_soon_threadsafe(self.client.progress, "report", msg)

        def run(cancel: CancelToken):
            from .completer import Completer

            load = self._load_model
            if load is None:
                from .model import load
            lm = load(cfg.model, device=cfg.device, dtype=cfg.dtype, progress=say)
            draft_lm = load(cfg.draft_model, device=cfg.device, dtype=cfg.dtype, progress=say) if cfg.draft_model else None
            completer = Completer(lm, draft_lm)
            say("measuring step costs")
            completer.auto_policy()  # calibrated once per model and device (cached on disk)
            return completer

        t0 = time.monotonic()
        fut = self.worker.submit("model", run)
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(self._loaded, key, f, t0))

    def _loaded(self, key: tuple[str, ...], fut, t0: float) -> None:
        if key != self._loading_key:
            return  # a newer configuration is loading
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            if isinstance(exc, MemoryError):
                why = f"out of memory ({why or 'MemoryError'}); try a smaller model or dtype"
            self.model_state, self.model_message = "error", f"could not load {key[0]}: {why}"
            log.error("%s", self.model_message)
            self.client.progress("end", self.model_message)
            self.client.status("error", self.model_message)
            self.client.warn(f"speclsp: {self.model_message}")
            return
        self.completer = fut.result()
        lm = self.completer.lm
        self._loaded_key = key
        self.device = str(lm.device)
        self.policy = self._make_policy()
        self.drafting.attach(lm, [d for d in self.documents.values() if not d.too_large],
                             max_tokens=self.config.index_max_tokens)
        self.model_state = "ready"
        self.model_message = f"{key[0]} ready on {self.device} ({str(lm.dtype).removeprefix('torch.')})"
        log.info("model ready in %.1fs: %s", time.monotonic() - t0, self.model_message)
        self.client.progress("end", self.model_message)
        self.client.status("ready", self.model_message)

    def _make_policy(self) -> LookaheadPolicy:
        """Long-lived, so the auto controller keeps learning this machine's costs."""
        return self.completer.policy_for(self.config.lookahead)

    def shutdown(self) -> None:
        for gens in self.generations.values():
            for g in gens:
                g.cancel.cancel()
        self.worker.stop()

    # --- workspaces and documents ---------------------------------------------------------

    def add_folder(self, uri: str) -> None:
        if uri.rstrip("/") not in self.folders:
            self.folders.append(uri.rstrip("/"))
            self._folders_changed()

    def remove_folder(self, uri: str) -> None:
        if uri.rstrip("/") in self.folders:
            self.folders.remove(uri.rstrip("/"))
            self._folders_changed()

    def _folder_for(self, uri: str) -> str | None:
        inside = [f for f in self.folders if uri == f or uri.startswith(f + "/")]
        return max(inside, key=len) if inside else None

    def _folders_changed(self) -> None:
        self.drafting.set_folders(self.folders)
        for doc in self.documents.values():
            doc.folder = self._folder_for(doc.uri)

    def open(self, uri: str, path: str, language_id: str, version: int, text: str) -> None:
        if uri in self.documents:
            self.close(uri)  # opened again without a close: start over from this text
        doc = Document(uri, path, language_id, version, text, self._folder_for(uri))
        doc.too_large = len(text) > self.config.max_document_chars
        if doc.too_large:
            log.info("%s has %d characters, over maxDocumentChars %d: kept in sync, not indexed or completed",
                     uri, len(text), self.config.max_document_chars)
        self.documents[uri] = doc
        self.drafting.open(doc)

    def _check_size(self, doc: Document) -> None:
        """After an edit or a new cap: index a document that fits, drop one that no longer does."""
        too_large = len(doc.text) > self.config.max_document_chars
        if too_large == doc.too_large:
            return
        doc.too_large = too_large
        if too_large:
            log.info("%s grew to %d characters, over maxDocumentChars %d: no longer indexed or completed",
                     doc.uri, len(doc.text), self.config.max_document_chars)
            self.drafting.close(doc.uri)
            self.worker.cancel(doc.uri)
            self.generations.pop(doc.uri, None)
        else:
            log.info("%s is down to %d characters: indexed and completed again", doc.uri, len(doc.text))
            self.drafting.open(doc)

    def change(self, uri: str, version: int, changes: Sequence[tuple[tuple[int, int, int, int] | None, str]]) -> None:
        """Apply didChange content changes: (range in client units or None for all, text)."""
        doc = self.documents.get(uri)
        if doc is None:
            log.warning("didChange for a document that is not open: %s", uri)
            return
        if version <= doc.version:
            # Out of order: the changes still apply in the order they came (the stream is
            # ordered; the number is only a label), but no cached suggestion can be trusted.
            log.warning("didChange for %s goes from version %d back to %d: applied, suggestions dropped",
                        uri, doc.version, version)
            self.worker.cancel(uri)
            for gen in self.generations.pop(uri, ()):
                gen.cancel.cancel()
                gen.poke()
        for rng, new_text in changes:
            if rng is None:
                start, end = 0, len(doc.text)
            else:
                lines = doc.lines
                start = lines.offset_from_client(rng[0], rng[1], self.encoding)
                end = lines.offset_from_client(rng[2], rng[3], self.encoding)
                start, end = min(start, end), max(start, end)
            doc.text = doc.text[:start] + new_text + doc.text[end:]
            self.drafting.edit(doc, start, end, new_text)
        doc.version = version
        doc.edits += 1
        doc.edited_at = time.monotonic()
        self._check_size(doc)
        self.clock.on_edit(uri, doc.edited_at)
        self.stats.edits += 1
        for gen in self.generations.get(uri, ()):
            if not gen.done and gen.typed_through(*self._split(doc, gen), ahead=True) is None:
                gen.cancel.cancel()  # the edit left this suggestion behind
            gen.poke()  # waiters re-check their version and drop outdated answers

    @staticmethod
    def _split(doc: Document, gen: Generation) -> tuple[str, str]:
        """The document around where the cursor would be if the user typed into `gen`."""
        keep = len(doc.text) - len(gen.suffix)
        return doc.text[:keep], doc.text[keep:]

    def close(self, uri: str) -> None:
        doc = self.documents.pop(uri, None)
        if doc is not None:
            self.drafting.close(uri)
        self.worker.cancel(uri)
        self.generations.pop(uri, None)
        self.clock.forget(uri)
        self._latest_request.pop(uri, None)

    def accepted(self, uri: str, text: str, kind: str) -> None:
        self.drafting.add_history(uri, text)
        kind = kind if kind in ("full", "word", "line") else "other"
        log.info("accepted %s completion (%d chars) in %s", kind, len(text), uri)

    # --- completions ----------------------------------------------------------------------

    async def complete(self, uri: str, line: int, character: int, *, request_id: Any, invoked: bool = False) -> Answer:
        """Answer one completion request at (line, character) in client units."""
        t0 = time.monotonic()
        self._latest_request[uri] = request_id
        answer, gen = EMPTY, None
        try:
            answer, gen = await self._complete(uri, line, character, request_id, invoked, t0)
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            log.info("req %s cancelled by the client after %.0f ms", request_id, (time.monotonic() - t0) * 1e3)
            raise
        ms = (time.monotonic() - t0) * 1e3
        self.stats.completions += 1
        self.stats.latency_ms.append(ms)
        if not answer.text:
            self.stats.empty += 1
        self._log_answer(request_id, answer, gen, ms)
        return answer

    async def _complete(self, uri, line, character, request_id, invoked, t0) -> tuple[Answer, Generation | None]:
        doc = self.documents.get(uri)
        if doc is None:
            return replace(EMPTY, reason="not_open"), None
        if not self.config.enabled_for(doc.language_id):
            return replace(EMPTY, reason="disabled"), None
        if doc.too_large:
            log.info("req %s: %s is over maxDocumentChars (%d > %d): no completion", request_id, uri,
                     len(doc.text), self.config.max_document_chars)
            return replace(EMPTY, reason="too_large"), None
        lines = doc.lines
        if line >= len(lines):
            log.warning("req %s: line %d is past the end of %s (%d lines)", request_id, line, uri, len(lines))
            return replace(EMPTY, reason="bad_position"), None
        offset = lines.offset_from_client(line, character, self.encoding)
        prefix, suffix = doc.text[:offset], doc.text[offset:]
        line_text = lines.line(line)
        col = offset - lines.starts[line]
        word = m.group(0) if (m := _WORD_TAIL.search(line_text[:col])) else ""
        where = dict(line=line, character=from_codepoints(line_text, col, self.encoding), version=doc.version, word=word,
                     word_start=from_codepoints(line_text, col - len(word), self.encoding))
        sub = Subscriber(request_id, doc.version, 0, "", line, where["character"], edits=doc.edits)

        gen = self._find_generation(uri, prefix, suffix)
        if gen is not None:
            sub.typed = gen.typed_through(prefix, suffix) or 0
            sub.typed_text = prefix[len(prefix) - sub.typed :]
            gen.subscribers.append(sub)
            reason = "cache"
        else:
            if self.model_state != "ready" or self.completer is None:
                log.info("req %s: no completion, model %s (%s)", request_id, self.model_state, self.model_message)
                return replace(EMPTY, reason=f"model_{self.model_state}"), None
            delay = debounce_s(self.clock.interval(uri), invoked)
            if delay > 0:
                await asyncio.sleep(delay)
                if self._latest_request.get(uri) != request_id or sub.outdated(doc):
                    self.stats.superseded += 1
                    return replace(EMPTY, reason="superseded", **where), None
            gen = self._start_generation(doc, offset, invoked)
            gen.subscribers.append(sub)
            reason = "model"
        try:
            await self._wait(gen, sub, doc, repeat=reason == "cache")
            typed = prefix[len(gen.prefix) :] if reason == "cache" else ""
            if (reason == "cache" and not gen.text.startswith(typed) and not sub.outdated(doc)
                    and self._latest_request.get(uri) == request_id and self.completer is not None):
                # The user typed ahead of a generation that then wrote something else, and
                # this is the newest request: it gets a generation of its own.
                gen = self._start_generation(doc, offset, invoked)
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
                self.loop.call_later(CANCEL_GRACE_S, self._cancel_if_unwanted, gen, sub)
            raise
        finally:
            sub.answered = True
        if sub.outdated(doc) or self.documents.get(uri) is not doc:
            self.stats.stale += 1
            return replace(EMPTY, reason="stale", **where), gen
        if gen.done and gen.stop_reason in ("cancelled", "superseded") and self._latest_request.get(uri) != request_id:
            self.stats.superseded += 1  # a newer request moved on: this partial text is outdated
            return replace(EMPTY, reason="superseded", **where), gen
        text = gen.text[sub.typed :] if gen.text.startswith(prefix[len(gen.prefix) :]) else ""
        if not text.strip():
            return replace(EMPTY, reason=gen.stop_reason or "empty", **where), gen
        if reason == "cache":
            self.stats.cache_hits += 1  # answered with text, and no model call of its own
        return Answer(text=text, reason=reason, **where), gen

    def _cancel_if_unwanted(self, gen: Generation, sub: Subscriber) -> None:
        if gen.latest is sub and not gen.done:
            log.info("gen %d: cancelled request %s not followed by a matching one; stopping", gen.id, sub.request_id)
            gen.cancel.cancel()

    def _find_generation(self, uri: str, prefix: str, suffix: str) -> Generation | None:
        for gen in reversed(self.generations.get(uri, ())):
            if gen.typed_through(prefix, suffix, ahead=True) is not None and (gen.text or not gen.done):
                if gen.done and gen.stop_reason == "error":
                    continue
                if gen.cancel.cancelled and not gen.done:
                    continue  # being torn down; its text stops growing
                return gen
        return None

    async def _wait(self, gen: Generation, sub: Subscriber, doc: Document, repeat: bool) -> None:
        """Until the generation is done, or there is text and (a repeat request or the deadline)."""
        deadline_s = self.config.deadline_ms / 1e3
        deadline = time.monotonic() + deadline_s if deadline_s > 0 else None
        while not gen.done:
            if not gen.text.startswith(sub.typed_text):
                if not sub.typed_text.startswith(gen.text):
                    return  # the model wrote something else than the user typed ahead
                visible = ""  # the user is still ahead of the model
            else:
                visible = gen.text[sub.typed :].strip()
            if sub.outdated(doc) or gen.latest is not sub:
                return  # outdated or superseded by a newer request on this generation
            now = time.monotonic()
            if visible and (repeat or (deadline is not None and now >= deadline)):
                return
            timeout = max(0.0, deadline - now) if deadline is not None and now < deadline else None
            await gen.changed(timeout)

    def _start_generation(self, doc: Document, offset: int, invoked: bool) -> Generation:
        from .completer import CompletionRequest

        cfg = self.config
        completer = self.completer
        gen = Generation(doc, offset)
        gens = self.generations.setdefault(doc.uri, [])
        gens.append(gen)
        del gens[:-cfg.cached_completions]
        # Another document's generation that only fills the cache must not hold up this one.
        for uri, others in self.generations.items():
            for other in others:
                if uri != doc.uri and not other.done and all(s.answered for s in other.subscribers):
                    other.cancel.cancel()
        # The prompt sees a window of the document around the cursor (the same prompt as from
        # the whole text, at a bounded cost) and other documents up to a total size.
        lines = doc.lines
        start, end = prompt_window(doc.text, lines.starts, offset, cfg.context_budget)
        text = doc.text[start:end]
        line = doc.text.count("\n", start, offset)
        col = offset - max(start, doc.text.rfind("\n", start, offset) + 1)
        others, other_chars = [], 0
        for d in sorted((d for d in self.documents.values() if d is not doc and d.folder == doc.folder
                         and not d.too_large), key=lambda d: -d.edited_at)[:MAX_OTHER_DOCUMENTS]:
            if other_chars + len(d.text) > MAX_OTHER_CHARS:
                continue
            others.append(d)
            other_chars += len(d.text)
        now = time.monotonic()
        # While the user types, steps must fit between keystrokes and completions are
        # short (so they finish and the typed-through cache can serve the next keys).
        max_tokens = cfg.max_tokens if invoked else min(cfg.max_tokens, self.clock.max_tokens(doc.uri, now))
        req = CompletionRequest(
            path=doc.path, text=text, line=line, character=col,
            other_documents=tuple(OpenDocument(d.path, d.text) for d in others),
            max_tokens=max_tokens, lookahead=cfg.lookahead,
            drafter=cfg.drafter_kind if completer.model_drafter is not None else "ngram",
            time_budget_s=GENERATION_TIME_CAP_S,
            step_budget_s=None if invoked else self.clock.step_budget(doc.uri, now),
            budget=PromptBudget(max_prompt_tokens=cfg.context_budget, context_tokens=min(512, cfg.context_budget // 4)),
        )
        drafter = self.drafting.drafter(doc.uri, offset)
        policy = self.policy
        loop = self.loop
        self.stats.model_calls += 1

        fault = self.fault_inject.removeprefix("generate-if-contains:") if self.fault_inject else ""

        def run(cancel: CancelToken):
            if fault and fault in req.text:  # test-only (FAULT_INJECT_ENV)
                raise RuntimeError("injected fault (SPECLSP_FAULT_INJECT)")
            return completer.complete(req, drafter=drafter, policy=policy, cancel=cancel,
                                      on_text=lambda t: loop.call_soon_threadsafe(self._grow, gen, t))

        fut = self.worker.submit(doc.uri, run, gen.cancel)
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(self._finished, gen, f))
        return gen

    def _grow(self, gen: Generation, text: str) -> None:
        gen.grow(text)
        doc = self.documents.get(gen.uri)
        if doc is not None and doc.version != gen.version and gen.typed_through(*self._split(doc, gen), ahead=True) is None:
            gen.cancel.cancel()  # the user typed ahead, and the model now disagrees
        self._stream(gen)

    def _finished(self, gen: Generation, fut) -> None:
        if fut.cancelled():
            gen.finish("superseded")
        elif (exc := fut.exception()) is not None:
            log.error("generation %d failed: %s: %s", gen.id, type(exc).__name__, str(exc)[:200])
            self.stats.errors += 1
            gen.finish("error")
        else:
            comp = fut.result()
            gen.grow(comp.text)
            stats = comp.stats
            gen.finish(stats.stop_reason, stats.to_dict())
            s = self.stats
            if stats.new_tokens > 1:  # decode speed: tokens after the first over the time after it
                s.new_tokens += stats.new_tokens - 1
                s.decode_s += max(0.0, stats.total_ms - stats.ttft_ms) / 1e3
            s.drafted += stats.drafted
            s.accepted += stats.accepted
            s.last = {**gen.stats, "requestId": gen.subscribers[0].request_id if gen.subscribers else None}
            doc = self.documents.get(gen.uri)
            if doc is not None and comp.text:
                self.drafting.add_history(gen.uri, comp.text)
        self._stream(gen)

    def _stream(self, gen: Generation) -> None:
        """Send the latest request of `gen` the suggestion so far, if its client streams."""
        if not (self.streaming_opt_in and self.config.streaming):
            return
        sub = gen.latest
        doc = self.documents.get(gen.uri)
        if sub is None or doc is None or sub.outdated(doc):
            return  # nobody is looking at this version any more
        text = gen.text[sub.typed :] if gen.text.startswith(sub.typed_text) else ""
        if not text and not gen.done:
            return  # the user is ahead of the model: nothing to show yet
        self.client.inline_update({
            "uri": gen.uri, "version": sub.version,
            "position": {"line": sub.line, "character": sub.character},
            "text": text, "done": gen.done, "requestId": sub.request_id,
        })

    def _log_answer(self, request_id: Any, answer: Answer, gen: Generation | None, ms: float) -> None:
        if gen is None:
            log.info("req %s: empty (%s) in %.1f ms", request_id, answer.reason, ms)
            return
        first = (gen.t_first_text - gen.t_start) * 1e3 if gen.t_first_text else None
        st = gen.stats
        log.info(
            "req %s gen %d: %s, %d chars, %s in %.1f ms (first text %s ms, prefill %s ms, tokens %s, "
            "forwards %s, accepted %s/%s, stop %s)",
            request_id, gen.id, answer.reason, len(answer.text), "done" if gen.done else "partial", ms,
            f"{first:.0f}" if first is not None else "-", st.get("prefill_ms", "-"), st.get("new_tokens", "-"),
            st.get("forwards", "-"), st.get("accepted", "-"), st.get("drafted", "-"), gen.stop_reason or "running",
        )
        log.debug("req %s text: %r", request_id, answer.text)

    # --- observability --------------------------------------------------------------------

    def stats_dict(self) -> dict[str, Any]:
        d = self.stats.to_dict()
        drafter = self.completer.model_drafter if self.completer is not None else None
        d.update(model=self.config.model, device=self.device, state=self.model_state, version=__version__,
                 draftModel=self.config.draft_model if drafter is not None else "",
                 drafter=self.config.drafter_kind if drafter is not None else "ngram",
                 superseded=self.stats.superseded + 0, workerSuperseded=self.worker.superseded,
                 workerPeakPending=self.worker.peak_pending, documents=len(self.documents))
        return d
