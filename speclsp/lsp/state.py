"""The server's mutable state, and what notifications do to it.

`ServerState` owns: the configuration, the open documents (`documents.DocumentStore`), the
workspace folders and their n-gram indexes (`drafting.folders`, fed by every edit), the
keystroke clock (`drafting.clock.KeystrokeClock`), the completion cache
(`generations.Generations`), the model worker and the model's lifecycle
(`loading.ModelSlot`), the long-lived lookahead policy, and the counters. Requests are the
session's (`session.py`); everything here runs on the event loop thread except model work.

It knows nothing of lsprotocol: positions arrive as (line, units) in the negotiated
encoding, and the editor is reached through the `ClientChannel` protocol.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .. import __version__
from ..drafting.clock import KeystrokeClock
from ..drafting.controller import LookaheadPolicy
from ..drafting.folders import Folders, WorkspaceIndexes, worth_remembering
from .config import Config, parse_options
from .documents import Document, DocumentStore, Edit, Range, brief
from .generations import Generations
from .indexing import IndexWorker
from .loading import ModelSlot
from .scheduler import ModelWorker, document_key
from .stats import ServerStats

log = logging.getLogger(__name__)


class ClientChannel(Protocol):
    """What the server's state and session may send to the editor (the server implements it)."""

    def status(self, state: str, message: str) -> None: ...

    def progress(self, kind: str, message: str) -> None:
        """kind: "begin", "report" or "end"."""

    def inline_update(
        self, uri: str, version: int, line: int, character: int, text: str, done: bool, request_id: Any
    ) -> None: ...

    def warn(self, message: str) -> None: ...


class ServerState:
    """All mutable server state; every method runs on the event loop thread."""

    def __init__(self, base_config: Config, client: ClientChannel, *, load_model: Callable[..., Any] | None = None):
        self.config = base_config
        self.client = client
        self.streaming_opt_in = False
        self.lf_only = False  # the client wants suggestions with "\n" line endings (Neovim)
        self.folders = Folders()
        self.documents = DocumentStore(self.folders, base_config.max_document_chars)
        self.indexes = WorkspaceIndexes(self.folders, max_tokens=base_config.index_max_tokens)
        self.indexer = IndexWorker()  # every index update runs there, in order (indexing.py)
        self.clock = KeystrokeClock()
        self.generations = Generations(base_config.cached_completions)
        self.worker = ModelWorker()
        self.model = ModelSlot(self.worker, client, load_model)
        self.policy: LookaheadPolicy | None = None  # long-lived: the auto controller learns
        self.stats = ServerStats()
        self.latest_request: dict[str, Any] = {}  # per document: the newest completion request's id
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def encoding(self) -> str:
        return self.documents.encoding

    # --- lifecycle and configuration ------------------------------------------------------

    def initialize(self, options: Any, encoding: str, folders: Sequence[str], streaming_capability: bool) -> list[str]:
        """Apply `initialize`: options, position encoding, folders. Returns warnings."""
        self.documents.encoding = encoding
        warnings = self._apply(options)
        explicit = isinstance(options, dict) and options.get("streaming") is True
        self.streaming_opt_in = streaming_capability or explicit
        self.change_folders(added=folders)
        log.info(
            "initialize: encoding=%s streaming=%s folders=%d model=%s",
            encoding,
            self.streaming_opt_in,
            len(folders),
            self.config.model,
        )
        return warnings

    def change_configuration(self, options: Any) -> list[str]:
        """Overlay new options; reload the model if model, device or dtype changed."""
        warnings = self._apply(options)
        log.info(
            "configuration changed: model=%s maxTokens=%d lookahead=%s streaming=%s enabled=%s",
            self.config.model,
            self.config.max_tokens,
            self.config.lookahead,
            self.config.streaming,
            self.config.enabled,
        )
        if self.model.needs_reload(self.config):
            self.start_loading()
        return warnings

    def _apply(self, options: Any) -> list[str]:
        old = self.config
        self.config, warnings = parse_options(options, old)
        cfg = self.config
        if cfg.lookahead != old.lookahead and self.model.ready:
            self.policy = self.model.completer.policy_for(cfg.lookahead)
        if cfg.index_max_tokens != old.index_max_tokens:
            self.indexer.submit(functools.partial(self.indexes.set_max_tokens, cfg.index_max_tokens))
        self.generations.per_document = cfg.cached_completions
        if cfg.max_document_chars != old.max_document_chars:
            self.documents.max_chars = cfg.max_document_chars
            for doc in self.documents:
                self._resized(doc)
        return warnings

    def start_loading(self) -> None:
        """Load (or reload) the configured model on the worker thread, in the background."""
        for uri in self.generations.uris():
            self.worker.cancel(document_key(uri))
        self.model.start(self.config, self.loop, self._model_ready)

    def _model_ready(self, completer: Any) -> None:
        """A new model: a new lookahead policy and new indexes (its tokenizer)."""
        self.policy = completer.policy_for(self.config.lookahead)  # long-lived, so it keeps learning
        backend = completer.backend
        fim = completer.fim  # the detected family's markers: its suffix part is labelled
        recent_first = sorted(self.documents, key=lambda d: -d.edited_at)
        documents = [(d.uri, d.text) for d in recent_first if not d.too_large]
        self.indexer.submit(
            lambda: self.indexes.attach(
                backend.tokenizer,
                backend.encode,
                documents,
                fim_suffix_id=fim.suffix if fim else None,
                fim_middle_id=fim.middle if fim else None,
            ),
            sum(len(text) for _, text in documents),
        )

    def shutdown(self) -> None:
        for gen in self.generations:
            gen.cancel.cancel()
        self.worker.stop()
        self.indexer.stop()

    # --- workspaces and documents ---------------------------------------------------------

    def change_folders(self, added: Sequence[str] = (), removed: Sequence[str] = ()) -> None:
        """Workspace folders added and removed, followed once for the whole change: once per
        folder, hundreds of folders with hundreds of documents open froze the event loop for
        seconds (docs/reliability.md)."""
        changed = [self.folders.remove(uri) for uri in removed] + [self.folders.add(uri) for uri in added]
        if any(changed):
            self.indexer.submit(self.indexes.folders_changed)
            self.documents.folders_changed()

    def open(self, uri: str, path: str, language_id: str, version: int, text: str) -> None:
        if uri in self.documents:
            self.close(uri)  # opened again without a close: start over from this text
        doc = self.documents.open(uri, path, language_id, version, text)
        text = doc.text  # as stored (lone surrogates replaced)
        log.info("opened %s (%d chars)", brief(uri), len(text))
        if not doc.too_large:
            self.indexer.submit(lambda: self.indexes.open(uri, text), len(text))

    def change(self, uri: str, version: int, changes: Sequence[tuple[Range | None, str]]) -> None:
        """Apply didChange content changes: (range in client units or None for all, text)."""
        doc = self.documents.get(uri)
        if doc is None:
            log.warning("didChange for a document that is not open: %s", brief(uri))
            return
        if version <= doc.version:
            # Out of order: the changes still apply in the order they came (the stream is
            # ordered; the number is only a label), but no cached suggestion can be trusted.
            log.warning(
                "didChange for %s goes from version %d back to %d: applied, suggestions dropped",
                brief(uri),
                doc.version,
                version,
            )
            self.worker.cancel(document_key(uri))
            self.generations.drop(uri)
        was_indexed = not doc.too_large
        edits = self.documents.change(doc, version, changes)
        if was_indexed:
            self.indexer.submit(lambda: self._index_edits(uri, edits), sum(len(e.after) for e in edits))
            # Rewritten code often comes back in part: what the user's edit took out (a line
            # deleted, a selection typed over) is drafted from, beside accepted completions.
            # One change only: a formatter's many changes would push the history out.
            if len(edits) == 1 and worth_remembering(edits[0].removed):
                self.remember(uri, edits[0].removed)
        self._resized(doc)
        self.clock.on_edit(uri, doc.edited_at)
        self.stats.edits += 1
        self.generations.after_edit(uri, doc.text)

    def _index_edits(self, uri: str, edits: Sequence[Edit]) -> None:
        for e in edits:  # on the index thread
            self.indexes.edit(uri, e.start, e.end, e.text, e.after)

    def _resized(self, doc: Document) -> None:
        """Index a document that fits again, drop one that no longer does."""
        became = self.documents.resize(doc)
        uri, text = doc.uri, doc.text
        if became is True:
            self.indexer.submit(lambda: self.indexes.close(uri))
            self.worker.cancel(document_key(doc.uri))
            self.generations.drop(doc.uri)
        elif became is False:
            self.indexer.submit(lambda: self.indexes.open(uri, text), len(text))

    def close(self, uri: str) -> None:
        if self.documents.close(uri) is not None:
            log.info("closed %s", brief(uri))
            self.indexer.submit(lambda: self.indexes.close(uri))
        self.worker.cancel(document_key(uri))
        self.generations.drop(uri)
        self.clock.forget(uri)
        self.latest_request.pop(uri, None)

    def remember(self, uri: str, text: str) -> None:
        """A completion that was accepted or generated, or text an edit removed, joins its
        folder's drafting history."""
        self.indexer.submit(lambda: self.indexes.add_history(uri, text), len(text))

    def accepted(self, uri: str, text: str, kind: str) -> None:
        self.remember(uri, text)
        kind = kind if kind in ("full", "word", "line") else "other"
        log.info("accepted %s completion (%d chars) in %s", kind, len(text), brief(uri))

    # --- observability --------------------------------------------------------------------

    def stats_dict(self) -> dict[str, Any]:
        d = self.stats.to_dict()
        kinds = self.model.completer.backend.drafter_kinds if self.model.ready else ("ngram",)
        with_model = "model" in kinds
        remote = self.config.backend == "openai"
        d.update(
            model=(self.config.remote_model or "(server's first)") if remote else self.config.model,
            backend=self.config.backend,
            device=self.model.device,
            state=self.model.state,
            version=__version__,
            dtype=self.model.dtype,
            dtypeReason=self.model.dtype_reason,
            draftModel=self.config.draft_model if with_model else "",
            drafter=self.config.drafter_kind if with_model else "ngram",
            workerSuperseded=self.worker.superseded,
            workerPeakPending=self.worker.peak_pending,
            documents=len(self.documents),
            documentChars=sum(len(d.text) for d in self.documents),
            indexedTokens=self.indexes.ntokens(),
            notIndexed=[brief(u) for u in self.indexes.refused()[:10]],
        )
        return d
