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
unless -vv asks for DEBUG. Nothing below -vv logs document text or message bodies.

Bad input never ends the server (docs/reliability.md): the message loop here replaces
pygls' own so that framing errors, oversized messages, invalid JSON, malformed requests and
requests before `initialize` each get the JSON-RPC error the specifications ask for (or are
dropped, for notifications) and the loop reads on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import threading
import uuid
from typing import Any, Callable

from cattrs import transform_error
from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import (JsonRPCNotification, JsonRPCRequestMessage, JsonRPCResponseMessage,
                                     RPCNotification, RPCRequest)
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
# A message body above this is skipped unread (in chunks, so it never sits in memory): no
# editor sends one (a 10 MB didOpen is ~10 MB of JSON), and reading it whole could exhaust
# memory on a lying Content-Length.
MAX_MESSAGE_BYTES = 64 * 2**20
MAX_HEADER_LINE = 8192  # a longer header line is garbage, read and dropped in pieces
SKIP_CHUNK = 2**20
_CONTENT_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*(\d+)$", re.IGNORECASE)

PARSE_ERROR = types.ErrorCodes.ParseError.value  # -32700
INVALID_REQUEST = types.ErrorCodes.InvalidRequest.value  # -32600
INVALID_PARAMS = types.ErrorCodes.InvalidParams.value  # -32602
SERVER_NOT_INITIALIZED = types.ErrorCodes.ServerNotInitialized.value  # -32002


def _describe(exc: BaseException) -> str:
    """What was wrong with a message's structure: paths and expected types, never values
    (the values may be document text, which must not reach the log)."""
    try:
        return "; ".join(transform_error(exc, path="$"))[:500]
    except Exception:
        return type(exc).__name__


class SpeclspProtocol(LanguageServerProtocol):
    """pygls' protocol plus our experimental capability in the `initialize` result, and
    the checks on every incoming message (`receive`) that keep bad input from hurting."""

    def __init__(self, server, converter):
        super().__init__(server, converter)
        self.initialized = False  # an `initialize` request has been handled
        self.received = 0  # message bodies read (for the reliability tests' figures)
        self.rejected = 0  # of those, answered with an error or dropped as malformed

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        self.initialized = True
        result = yield from super().lsp_initialize(params)
        result.capabilities.experimental = {
            "speclsp": {"inlineCompletionUpdate": True, "stats": True, "version": __version__}
        }
        return result

    # The session keeps the documents; pygls' workspace would keep a second copy of every
    # text (10 MB twice for a 10 MB file) and can raise on edits the session clamps.
    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_OPEN)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            yield handler, (params,), None

    # --- incoming messages ---------------------------------------------------------------

    def reply_error(self, msg_id: Any, code: int, message: str) -> None:
        """An error response; `msg_id` None when the request's id cannot be known."""
        self.rejected += 1
        self._send_data({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}})

    def receive(self, body: bytes) -> None:
        """One message body from the transport: check it, then hand it to pygls.

        Invalid JSON: ParseError (id null). Not a JSON-RPC 2.0 message: InvalidRequest.
        A request whose params do not fit its method: InvalidParams to its id; such a
        notification is dropped with a log line. Requests before `initialize`:
        ServerNotInitialized; notifications then are dropped (except `exit`). Requests
        after `shutdown`: InvalidRequest.
        """
        self.received += 1
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            where = f" at byte {e.pos}" if isinstance(e, json.JSONDecodeError) else ""
            log.warning("message of %d bytes is not valid JSON%s: parse error", len(body), where)
            self.reply_error(None, PARSE_ERROR, f"Parse error: the message is not valid JSON{where}")
            return
        if not isinstance(data, dict):
            log.warning("message is a JSON %s, not an object: invalid request", type(data).__name__)
            self.reply_error(None, INVALID_REQUEST, "Invalid Request: a message must be a JSON object")
            return
        method, msg_id = data.get("method"), data.get("id")
        good_id = isinstance(msg_id, (int, str)) and not isinstance(msg_id, bool)
        notification = "id" not in data and isinstance(method, str)
        if data.get("jsonrpc") != "2.0" or ("method" in data and not isinstance(method, str)) \
                or ("id" in data and not good_id) \
                or ("method" not in data and not ("id" in data and ("result" in data or "error" in data))):
            if notification:
                log.warning("malformed %s notification dropped (not JSON-RPC 2.0)", method[:80])
                self.rejected += 1
            else:
                log.warning("invalid request (id %r): not a JSON-RPC 2.0 request, notification or response",
                            msg_id if good_id else None)
                self.reply_error(msg_id if good_id else None, INVALID_REQUEST,
                                 "Invalid Request: not a JSON-RPC 2.0 request, notification or response")
            return
        if "method" in data and "params" not in data:
            data["params"] = None  # JSON-RPC lets a request or notification omit its params
        try:
            message = self._structure(data)
        except Exception as e:
            detail = _describe(e)
            if notification:
                log.warning("%s notification with invalid params dropped: %s", method[:80], detail)
                self.rejected += 1
            elif "method" in data:
                log.warning("req %s: %s with invalid params: %s", msg_id, method[:80], detail)
                self.reply_error(msg_id, INVALID_PARAMS, f"Invalid params for {method[:80]}: {detail}")
            else:
                log.warning("malformed response to %r dropped: %s", msg_id, detail)
                self.rejected += 1
            return
        self.handle_message(message)

    def _structure(self, data: dict[str, Any]) -> Any:
        """pygls' structure_message without its logging (which prints the values)."""
        conv = self._converter
        if "id" in data:
            if "error" in data:
                return conv.structure(data, types.ResponseErrorMessage)
            if "method" in data:
                return conv.structure(data, self.get_message_type(data["method"]) or JsonRPCRequestMessage)
            return conv.structure(data, self._result_types.pop(data["id"], None) or JsonRPCResponseMessage)
        return conv.structure(data, self.get_message_type(data["method"]) or JsonRPCNotification)

    def handle_message(self, message) -> None:
        method = getattr(message, "method", None)
        if isinstance(message, RPCRequest):
            if not self.initialized and method != types.INITIALIZE:
                log.warning("req %s: %s before initialize", message.id, method[:80])
                self.reply_error(message.id, SERVER_NOT_INITIALIZED, f"{method[:80]}: the server is not initialized yet")
                return
            if self.initialized and method == types.INITIALIZE and self._workspace is not None:
                log.warning("req %s: a second initialize refused", message.id)
                self.reply_error(message.id, INVALID_REQUEST, "initialize may be sent only once")
                return
            if self._shutdown:
                log.warning("req %s: %s after shutdown", message.id, method[:80])
                self.reply_error(message.id, INVALID_REQUEST, f"{method[:80]}: the server is shutting down")
                return
        elif isinstance(message, RPCNotification) and not self.initialized and method != types.EXIT:
            log.warning("%s notification before initialize dropped", method[:80])
            return
        super().handle_message(message)


class _StdinReader:
    """Blocking reads of stdin on a thread, awaited on the event loop."""

    def __init__(self, stream, executor):
        self.stream, self.executor = stream, executor

    async def readline(self, limit: int) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.stream.readline, limit)

    async def read(self, n: int) -> bytes:
        """`n` bytes, or fewer at the end of the stream."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.stream.read, n)


class _SocketReader:
    """An asyncio StreamReader (TCP) behind the same two calls."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader

    async def readline(self, limit: int) -> bytes:
        try:
            return await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            return e.partial
        except asyncio.LimitOverrunError as e:  # a line longer than the buffer: hand a piece over
            return await self.reader.read(max(1, min(e.consumed, limit)))

    async def read(self, n: int) -> bytes:
        try:
            return await self.reader.readexactly(n)
        except asyncio.IncompleteReadError as e:
            return e.partial


async def read_messages(reader, protocol: SpeclspProtocol, stop: threading.Event) -> None:
    """The message loop: `Content-Length` framing, then `protocol.receive` per body.

    Header lines other than Content-Length (and Content-Type) are logged and skipped, which
    also resynchronises after garbage: the next line ending in `Content-Length: N` starts
    a message. A
    body over MAX_MESSAGE_BYTES is skipped in chunks. Ends at the end of the stream.
    """
    while not stop.is_set():
        length: int | None = None
        while True:  # headers, up to the empty line
            line = await reader.readline(MAX_HEADER_LINE)
            if not line:
                return
            stripped = line.strip()
            if not stripped:
                if length is not None:
                    break
                continue
            # `search`, not `match`: after a lying Content-Length the rest of a swallowed
            # body runs into the next header on the same line; its end still counts.
            if m := _CONTENT_LENGTH.search(stripped):
                digits = m.group(1)
                length = int(digits) if len(digits) <= 18 else 10**18
            elif not stripped.lower().startswith(b"content-type"):
                log.warning("skipping a header line that is not Content-Length (%d bytes)", len(line))
        if length > MAX_MESSAGE_BYTES:
            log.warning("message of %d bytes is over the %d-byte limit: skipped unread", length, MAX_MESSAGE_BYTES)
            protocol.received += 1
            protocol.rejected += 1
            while length > 0:
                chunk = await reader.read(min(length, SKIP_CHUNK))
                if not chunk:
                    return
                length -= len(chunk)
            continue
        body = await reader.read(length)
        if len(body) < length:
            log.warning("the stream ended inside a message (%d of %d bytes)", len(body), length)
            return
        try:
            protocol.receive(body)
        except Exception:  # a bug of ours: the message is lost, the server is not
            log.exception("failed to handle a message of %d bytes", length)


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

    # --- transports ------------------------------------------------------------------------

    def start_io(self, stdin=None, stdout=None) -> None:
        """Serve over stdin/stdout (pygls' writer, our message loop) until EOF or `exit`."""
        from pygls.io_ import StdoutWriter

        self._stop_event = threading.Event()
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        reader = _StdinReader(stdin or sys.stdin.buffer, self.thread_pool)
        try:
            asyncio.run(read_messages(reader, self.protocol, self._stop_event))
        except BrokenPipeError:
            log.error("the connection to the client is lost; shutting down")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    def start_tcp(self, host: str, port: int, announce: Callable[[str, int], None] | None = None) -> None:
        """Serve the first client that connects to host:port until it disconnects; no other
        connection is accepted. `announce(host, port)` is called with the bound address."""
        self._stop_event = stop = threading.Event()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self._server is not None:
                self._server.close()  # one client per server: stop listening
            peer = writer.get_extra_info("peername")
            log.info("client connected from %s", peer)
            self.protocol.set_writer(writer)
            try:
                await read_messages(_SocketReader(reader), self.protocol, stop)
            finally:
                log.info("client %s disconnected", peer)
                self.shutdown()
                asyncio.get_running_loop().stop()

        async def listen() -> None:
            self._server = await asyncio.start_server(connection, host, port, limit=MAX_HEADER_LINE * 2)
            bound = self._server.sockets[0].getsockname()
            if announce is not None:
                announce(bound[0], bound[1])
            await asyncio.Event().wait()  # until the connection's handler stops the loop

        loop = asyncio.new_event_loop()
        try:
            loop.create_task(listen())
            loop.run_forever()
        except (KeyboardInterrupt, SystemExit):
            pass

    def report_server_error(self, error: Exception, source) -> None:
        """Log, never pop up: a malformed notification must not show the user a dialog."""
        log.error("server error (%s): %s", getattr(source, "__name__", source), type(error).__name__)

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
        if not ls.session.loading_started:  # a repeated `initialized` must not reload
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


def serve_tcp(host: str, port: int, model: str | None = None, device: str | None = None, dtype: str | None = None,
              announce: Callable[[str, int], None] | None = None) -> None:
    """Serve one client over TCP until it disconnects, then end the process.

    `announce(host, port)` gets the bound address (port 0 asks the system for a free one).
    """
    global server
    _quiet_pygls()
    server = build_server(_config(model, device, dtype))

    def bound(h: str, p: int) -> None:
        log.info("speclsp %s serving on %s:%d (pid %d)", __version__, h, p, os.getpid())
        if announce is not None:
            announce(h, p)

    server.start_tcp(host, port, announce=bound)
    _exit(0 if server.protocol._shutdown else 1)
