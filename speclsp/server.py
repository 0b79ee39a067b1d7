"""The language server: thin pygls handlers; lsprotocol types stop here.

Every handler follows one recipe: unpack the lsprotocol params into plain values, call the
session (speclsp/session.py, which owns all state and the completion flow), and translate
its plain answer back into lsprotocol types. The extensions to LSP (streaming updates,
status, stats, accept events) are specified in docs/protocol.md.

Completion handlers are coroutines: pygls can cancel a coroutine on `$/cancelRequest`,
which the session turns into the engine's CancelToken; it cannot stop a thread handler
once started. The model runs on the session's worker thread, never on the event loop.

stdout carries the protocol: logging goes to stderr or a file (see cli.setup_logging),
and pygls' own INFO logging, which echoes every message with document text, is muted
unless -vv asks for DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any, Callable

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method
from pygls.uris import to_fs_path

from . import __version__
from .config import Config, settings_section
from .positions import ENCODINGS, UTF16
from .session import Answer, Session

log = logging.getLogger(__name__)

INLINE_UPDATE = "speclsp/inlineCompletionUpdate"
STATUS = "speclsp/status"
STATS = "speclsp/stats"
DID_ACCEPT = "speclsp/didAccept"
PARENT_POLL_S = 2.0  # how often to check that the editor process is still alive


class SpeclspProtocol(LanguageServerProtocol):
    """pygls' protocol plus our experimental capability in the `initialize` result."""

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        result = yield from super().lsp_initialize(params)
        result.capabilities.experimental = {
            "speclsp": {"inlineCompletionUpdate": True, "stats": True, "version": __version__}
        }
        return result


class EditorChannel:
    """The session's way to the editor (`session.ClientChannel`): notifications and progress."""

    def __init__(self, ls: "SpeclspServer"):
        self.ls = ls
        self.supports_progress = False
        self._token: str | None = None
        self._chain: asyncio.Future | None = None

    def status(self, state: str, message: str) -> None:
        s = self.ls.session
        payload = {"state": state, "message": message, "model": s.config.model, "device": s.device}
        # After any progress messages queued before it, so "ready" follows the progress end.
        self._then(lambda: self.ls.protocol.notify(STATUS, payload))

    def inline_update(self, payload: dict[str, Any]) -> None:
        self.ls.protocol.notify(INLINE_UPDATE, payload)

    def warn(self, message: str) -> None:
        log.warning("%s", message)
        self.ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=message))

    def progress(self, kind: str, message: str) -> None:
        """$/progress for model loading, in order, if the client supports it."""
        if not self.supports_progress:
            return

        async def create() -> None:
            token = f"speclsp-load-{uuid.uuid4().hex[:8]}"
            try:
                await asyncio.wait_for(self.ls.work_done_progress.create_async(token), 10)
            except Exception as e:  # the client refused or never answered: no progress
                log.info("no work-done progress: %s", e)
                self._token = None
                return
            self._token = token
            self.ls.work_done_progress.begin(
                token, types.WorkDoneProgressBegin(title="speclsp", message=message, cancellable=False))

        def update() -> None:
            if self._token is None:
                return
            if kind == "report":
                self.ls.work_done_progress.report(self._token, types.WorkDoneProgressReport(message=message))
            else:
                self.ls.work_done_progress.end(self._token, types.WorkDoneProgressEnd(message=message))
                self._token = None

        self._then(create if kind == "begin" else update)

    def _then(self, action: Callable[[], Any]) -> None:
        """Run `action` (a function or coroutine function) after everything queued before."""
        previous = self._chain

        async def step() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            result = action()
            if asyncio.iscoroutine(result):
                await result

        self._chain = asyncio.ensure_future(step())


class SpeclspServer(LanguageServer):
    """Owns the session; the handlers below translate between it and lsprotocol."""

    def __init__(self, config: Config | None = None):
        super().__init__("speclsp", __version__, protocol_cls=SpeclspProtocol)
        self.channel = EditorChannel(self)
        self.session = Session(config or Config(), self.channel)
        self.pending_warnings: list[str] = []
        self.supports_pull_configuration = False
        self._watchdog: asyncio.Task | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop without waiting for the stdin reader thread (it may block until EOF)."""
        self.session.shutdown()
        if self._stop_event is not None:
            self._stop_event.set()
        if self._thread_pool:
            self._thread_pool.shutdown(wait=False, cancel_futures=True)
        if self._server:
            self._server.close()

    def watch_parent(self, pid: int | None) -> None:
        """Exit when the editor process that started us is gone (it cannot say `exit` then)."""
        if not pid or pid == os.getpid():
            return

        async def watch() -> None:
            while True:
                await asyncio.sleep(PARENT_POLL_S)
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    log.warning("client process %d is gone; exiting", pid)
                    _exit(1)
                except PermissionError:
                    pass  # exists, owned by someone else

        self._watchdog = asyncio.ensure_future(watch())


server = None  # the running SpeclspServer (for debugging)


# --- adapters: session answers -> lsprotocol ----------------------------------------------


def _first_line(text: str) -> str:
    return next((s.strip() for s in text.split("\n") if s.strip()), text.strip())


def inline_items(answer: Answer, invoked: bool) -> types.InlineCompletionList:
    """One item; an invoked multi-line suggestion also offers its first line alone."""
    if not answer.text:
        return types.InlineCompletionList(items=[])
    rng = types.Range(types.Position(answer.line, answer.word_start), types.Position(answer.line, answer.character))
    texts = [answer.text]
    if invoked and "\n" in answer.text.strip("\n") and answer.text.split("\n", 1)[0].strip():
        texts.append(answer.text.split("\n", 1)[0])
    items = [
        types.InlineCompletionItem(insert_text=answer.word + t, range=rng, filter_text=answer.word + t)
        for t in texts
    ]
    return types.InlineCompletionList(items=items)


def completion_items(answer: Answer) -> types.CompletionList:
    if not answer.text:
        return types.CompletionList(is_incomplete=True, items=[])
    cursor = types.Position(answer.line, answer.character)
    item = types.CompletionItem(
        label=_first_line(answer.text),
        kind=types.CompletionItemKind.Text,
        detail="speclsp",
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(range=types.Range(cursor, cursor), new_text=answer.text),
    )
    return types.CompletionList(is_incomplete=True, items=[item])


def _streaming_capability(caps: types.ClientCapabilities) -> bool:
    exp = caps.experimental if isinstance(caps.experimental, dict) else {}
    ours = exp.get("speclsp")
    return isinstance(ours, dict) and ours.get("inlineCompletionUpdate") is True


def _folders(params: types.InitializeParams) -> list[str]:
    if params.workspace_folders:
        return [f.uri for f in params.workspace_folders]
    if params.root_uri:
        return [params.root_uri]
    return []


def _path(uri: str) -> str:
    try:
        return to_fs_path(uri) or uri
    except Exception:
        return uri


# --- handlers -------------------------------------------------------------------------------


def build_server(config: Config | None = None) -> SpeclspServer:
    ls = SpeclspServer(config)

    @ls.feature(types.INITIALIZE)
    def initialize(ls: SpeclspServer, params: types.InitializeParams) -> None:
        encoding = str(ls.workspace.position_encoding or UTF16)
        if encoding not in ENCODINGS:
            encoding = UTF16
        caps = params.capabilities
        ls.channel.supports_progress = bool(caps.window and caps.window.work_done_progress)
        ls.supports_pull_configuration = bool(caps.workspace and caps.workspace.configuration)
        ls.pending_warnings = ls.session.initialize(
            params.initialization_options, encoding, _folders(params), _streaming_capability(caps)
        )
        name = params.client_info.name if params.client_info else "unknown client"
        log.info("client %s (pid %s), position encoding %s", name, params.process_id, encoding)
        ls.watch_parent(params.process_id)

    @ls.feature(types.INITIALIZED)
    def initialized(ls: SpeclspServer, params: types.InitializedParams) -> None:
        for message in ls.pending_warnings:
            ls.channel.warn(message)
        ls.pending_warnings = []
        ls.session.start_loading()  # in the background: initialize has been answered

    @ls.feature(types.SHUTDOWN)
    def shutdown(ls: SpeclspServer, params: None) -> None:
        log.info("shutdown requested; stats: %s", ls.session.stats_dict())
        ls.session.shutdown()

    @ls.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: SpeclspServer, params: types.DidOpenTextDocumentParams) -> None:
        d = params.text_document
        ls.session.open(d.uri, _path(d.uri), d.language_id, d.version, d.text)

    @ls.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: SpeclspServer, params: types.DidChangeTextDocumentParams) -> None:
        changes = []
        for c in params.content_changes:
            if isinstance(c, types.TextDocumentContentChangePartial):
                r = c.range
                changes.append(((r.start.line, r.start.character, r.end.line, r.end.character), c.text))
            else:
                changes.append((None, c.text))
        ls.session.change(params.text_document.uri, params.text_document.version, changes)

    @ls.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: SpeclspServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.session.close(params.text_document.uri)

    @ls.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    def did_change_folders(ls: SpeclspServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
        for f in params.event.removed:
            ls.session.remove_folder(f.uri)
        for f in params.event.added:
            ls.session.add_folder(f.uri)

    @ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: SpeclspServer, params: types.DidChangeConfigurationParams) -> None:
        options = settings_section(params.settings)
        if options is None and ls.supports_pull_configuration:
            # Pull-model clients (e.g. VS Code) send an empty notification: ask for the section.
            try:
                got = await asyncio.wait_for(ls.workspace_configuration_async(
                    types.ConfigurationParams(items=[types.ConfigurationItem(section="speclsp")])), 10)
                options = got[0] if got else None
            except Exception as e:
                log.info("workspace/configuration failed: %s", e)
        if options is None:
            return
        for message in ls.session.change_configuration(options):
            ls.channel.warn(message)

    @ls.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: SpeclspServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        answer = await ls.session.complete(params.text_document.uri, params.position.line, params.position.character,
                                           request_id=ls.protocol.msg_id, invoked=invoked)
        return inline_items(answer, invoked)

    @ls.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
    async def completion(ls: SpeclspServer, params: types.CompletionParams) -> types.CompletionList:
        invoked = params.context is None or params.context.trigger_kind == types.CompletionTriggerKind.Invoked
        answer = await ls.session.complete(params.text_document.uri, params.position.line, params.position.character,
                                           request_id=ls.protocol.msg_id, invoked=invoked)
        return completion_items(answer)

    @ls.feature(STATS)
    def stats(ls: SpeclspServer, params: Any) -> dict[str, Any]:
        return ls.session.stats_dict()

    @ls.feature(DID_ACCEPT)
    def did_accept(ls: SpeclspServer, params: Any) -> None:
        # pygls hands the params of methods it does not know over as a namedtuple.
        p = params._asdict() if hasattr(params, "_asdict") else params if isinstance(params, dict) else {}
        uri, text, kind = p.get("uri"), p.get("text"), p.get("kind", "full")
        if isinstance(uri, str) and isinstance(text, str):
            ls.session.accepted(uri, text, str(kind))
        else:
            log.warning("%s without uri/text ignored", DID_ACCEPT)

    return ls


# --- entry points (cli.run_server) ----------------------------------------------------------


def _quiet_pygls() -> None:
    root = logging.getLogger().getEffectiveLevel()
    if root > logging.DEBUG:
        # pygls logs every message it sends at INFO, document text included.
        logging.getLogger("pygls").setLevel(logging.WARNING)


def _exit(code: int) -> None:
    """Leave now: the stdin reader thread may be blocked in read() and would hold us up."""
    logging.shutdown()
    os._exit(code)


def _config(model: str | None, device: str | None, dtype: str | None) -> Config:
    cfg = Config()
    from dataclasses import replace

    return replace(cfg, model=model or cfg.model, device=device or cfg.device, dtype=dtype or cfg.dtype)


def serve_stdio(model: str | None = None, device: str | None = None, dtype: str | None = None) -> None:
    """Serve one client over stdin/stdout until `exit` or EOF, then end the process."""
    global server
    _quiet_pygls()
    server = build_server(_config(model, device, dtype))
    log.info("speclsp %s serving on stdio (pid %d)", __version__, os.getpid())
    server.start_io()
    _exit(0 if server.protocol._shutdown else 1)


def serve_tcp(host: str, port: int, model: str | None = None, device: str | None = None, dtype: str | None = None) -> None:
    """Serve one client over TCP until it disconnects, then end the process."""
    global server
    _quiet_pygls()
    server = build_server(_config(model, device, dtype))
    log.info("speclsp %s serving on %s:%d (pid %d)", __version__, host, port, os.getpid())
    server.start_tcp(host, port)
    _exit(0 if server.protocol._shutdown else 1)
