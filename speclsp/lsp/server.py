"""The language server: module-level handlers and one routing table; lsprotocol stops here.

Every handler follows one recipe: unpack the lsprotocol params into plain values, call the
state (notifications: `state.ServerState`) or the session (completion requests:
`session.Session`), and translate the plain answer back into lsprotocol types. A new
request kind is one function here plus one line in `FEATURES`. The extensions to LSP
(streaming updates, status, stats, accept events) are specified in docs/protocol.md; the
framing and message checks are `transport.py`'s.

Completion handlers are coroutines: pygls can cancel a coroutine on `$/cancelRequest`,
which the session turns into the backend's CancelToken; it cannot stop a thread handler
once started. The model runs on the worker thread, never on the event loop.

stdout carries the protocol: logging goes to stderr or a file (see cli.setup_logging),
and pygls' own INFO logging, which echoes every message with document text, is muted
unless -vv asks for DEBUG. Nothing below -vv logs document text or message bodies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from .. import __version__
from .adapters import completion_items, folders_of, inline_items, path_of, streaming_capability
from .channel import ClientWriter, EditorChannel
from .config import Config, camel, parse_options, settings_section
from .loopwatch import LoopWatch
from .memory import MemoryKeeper
from .positions import ENCODINGS, UTF16
from .session import Session
from .state import ServerState
from .transport import (
    MAX_HEADER_LINE,
    SocketReader,
    SpeclspProtocol,
    StdinReader,
    read_messages,
)

log = logging.getLogger(__name__)

STATS = "speclsp/stats"
DID_ACCEPT = "speclsp/didAccept"
PARENT_POLL_S = 2.0  # how often to check that the editor process is still alive
PID_MAX = 2**22  # the largest process id Linux hands out (pid_max); macOS and Windows stay below


class SpeclspServer(LanguageServer):
    """Owns the session; the handlers below translate between it and lsprotocol."""

    protocol: SpeclspProtocol

    def __init__(self, config: Config | None = None):
        super().__init__("speclsp", __version__, protocol_cls=SpeclspProtocol)
        self.channel = EditorChannel(self)
        self.state = ServerState(config or Config(), self.channel)
        self.session = Session(self.state)
        self.protocol.backlog = self.state.indexer.fill  # the reader waits while it is full
        self.loop_watch = LoopWatch(paused=lambda: self.state.model.state == "loading")
        self.memory = MemoryKeeper(busy=lambda: self.state.worker.busy() or self.state.model.state == "loading")
        self.pending_warnings: list[str] = []
        self.supports_pull_configuration = False
        self._watchdog: asyncio.Task | None = None
        self._served: list[Any] = []  # over TCP: the one client this server serves

    # --- transports ------------------------------------------------------------------------

    def start_io(self, stdin=None, stdout=None) -> None:
        """Serve over stdin/stdout (pygls' writer, our message loop) until EOF or `exit`."""
        from pygls.io_ import StdoutWriter

        self._stop_event = threading.Event()
        self.protocol.set_writer(ClientWriter(StdoutWriter(stdout or sys.stdout.buffer), self._client_lost))
        reader = StdinReader(stdin or sys.stdin.buffer, self.thread_pool)
        try:
            asyncio.run(read_messages(reader, self.protocol, self._stop_event))
        except BrokenPipeError:
            self._client_lost()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    def start_tcp(self, host: str, port: int, announce: Callable[[str, int], None] | None = None) -> None:
        """Serve the first client that speaks on host:port until it disconnects; no other
        connection is served. `announce(host, port)` is called with the bound address.

        A connection becomes the client only once it sends its first bytes: one that sends
        nothing for FIRST_BYTES_S is dropped (a port scanner, a stuck process), and until a
        client speaks, any connection may. Raises `ListenError` if it cannot listen (the
        port in use, a host that does not resolve)."""
        self._stop_event = threading.Event()
        failed: list[OSError] = []

        async def listen() -> None:
            try:
                self._server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEADER_LINE * 2)
            except OSError as e:  # in use, not an address of this machine, does not resolve
                failed.append(e)
                asyncio.get_running_loop().stop()
                return
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
        if failed:
            raise ListenError(f"cannot listen on {host}:{port}: {failed[0].strerror or failed[0]}")

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One TCP connection: the client if it is the first to speak, else dropped."""
        peer = writer.get_extra_info("peername")
        try:
            first = await asyncio.wait_for(reader.read(MAX_HEADER_LINE), FIRST_BYTES_S)
        except (TimeoutError, OSError):
            first = b""
        if not first or self._served:
            # Silent for too long, gone, or a client already speaks here: a second one
            # must never share the first one's protocol (its answers, its exit).
            why = f"this server already serves {self._served[0]}" if self._served else None
            log.warning("connection from %s dropped: %s", peer, why or f"nothing sent within {FIRST_BYTES_S:.0f} s")
            writer.close()
            return
        self._served.append(peer)
        if self._server is not None:
            self._server.close()  # one client per server: stop listening
        log.info("client connected from %s", peer)
        self.protocol.set_writer(writer)
        assert self._stop_event is not None
        try:
            await read_messages(SocketReader(reader), self.protocol, self._stop_event, first)
        finally:
            log.info("client %s disconnected", peer)
            self.shutdown()
            asyncio.get_running_loop().stop()

    def _client_lost(self) -> None:
        """The editor closed its end: say so once, stop reading, answer nothing more."""
        if self._stop_event is not None and not self._stop_event.is_set():
            log.warning("the client closed the connection; shutting down")
            self._stop_event.set()
            self.state.shutdown()

    def report_server_error(self, error: Exception, source) -> None:
        """Log, never pop up: a malformed notification must not show the user a dialog."""
        log.error("server error (%s): %s", getattr(source, "__name__", source), type(error).__name__)

    # --- lifecycle -------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop without waiting for the stdin reader thread (it may block until EOF)."""
        self.state.shutdown()
        if self._stop_event is not None:
            self._stop_event.set()
        if self._thread_pool:
            self._thread_pool.shutdown(wait=False, cancel_futures=True)
        if self._server:
            self._server.close()

    def watch_parent(self, pid: int | None) -> None:
        """Exit when the editor process that started us is gone (it cannot say `exit` then)."""
        if pid is None or pid == os.getpid():
            return
        if not 0 < pid <= PID_MAX:
            log.warning(
                "initialize: processId %s is not a process id: the server will not watch for the editor "
                "exiting (it ends on `exit` or when its input closes)",
                str(pid)[:40],
            )
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


# --- handlers (one recipe each: lsprotocol in, plain values to the state or session, lsprotocol out)


def initialize(ls: SpeclspServer, params: types.InitializeParams) -> None:
    encoding = str(ls.workspace.position_encoding or UTF16)
    if encoding not in ENCODINGS:
        encoding = UTF16
    caps = params.capabilities
    ls.channel.supports_progress = bool(caps.window and caps.window.work_done_progress)
    ls.supports_pull_configuration = bool(caps.workspace and caps.workspace.configuration)
    ls.pending_warnings = ls.state.initialize(
        params.initialization_options, encoding, folders_of(params), streaming_capability(caps)
    )
    name = params.client_info.name if params.client_info else "unknown client"
    # Neovim keeps a buffer as lines and its inline completion splits a suggestion at "\n"
    # alone: a CRLF suggestion would put a "\r" at the end of every line it inserts.
    ls.state.lf_only = name.strip().lower() == "neovim"
    log.info("client %s (pid %s), position encoding %s", name, params.process_id, encoding)
    ls.watch_parent(params.process_id)
    ls.loop_watch.start()
    ls.memory.start()


def initialized(ls: SpeclspServer, params: types.InitializedParams) -> None:
    for message in ls.pending_warnings:
        ls.channel.warn(message)
    ls.pending_warnings = []
    if not ls.state.model.started:  # a repeated `initialized` must not reload
        ls.state.start_loading()  # in the background: initialize has been answered


def shutdown(ls: SpeclspServer, params: None) -> None:
    log.info("shutdown requested; stats: %s", ls.state.stats_dict())
    ls.state.shutdown()


def did_open(ls: SpeclspServer, params: types.DidOpenTextDocumentParams) -> None:
    d = params.text_document
    ls.state.open(d.uri, path_of(d.uri), d.language_id, d.version, d.text)


def did_change(ls: SpeclspServer, params: types.DidChangeTextDocumentParams) -> None:
    changes: list[tuple[tuple[int, int, int, int] | None, str]] = []
    for c in params.content_changes:
        if isinstance(c, types.TextDocumentContentChangePartial):
            r = c.range
            changes.append(((r.start.line, r.start.character, r.end.line, r.end.character), c.text))
        else:
            changes.append((None, c.text))
    ls.state.change(params.text_document.uri, params.text_document.version, changes)


def did_close(ls: SpeclspServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.state.close(params.text_document.uri)
    ls.memory.soon()


def did_change_folders(ls: SpeclspServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
    ls.state.change_folders(added=[f.uri for f in params.event.added], removed=[f.uri for f in params.event.removed])
    ls.memory.soon()


async def did_change_configuration(ls: SpeclspServer, params: types.DidChangeConfigurationParams) -> None:
    options = settings_section(params.settings)
    if options is None and ls.supports_pull_configuration:
        # Pull-model clients (e.g. VS Code) send an empty notification: ask for the section.
        try:
            got = await asyncio.wait_for(
                ls.workspace_configuration_async(
                    types.ConfigurationParams(items=[types.ConfigurationItem(section="speclsp")])
                ),
                10,
            )
            options = got[0] if got else None
        except Exception as e:
            log.info("workspace/configuration failed: %s", e)
    if options is None:
        return
    for message in ls.state.change_configuration(options):
        ls.channel.warn(message)


async def inline_completion(ls: SpeclspServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
    answer = await ls.session.complete(
        params.text_document.uri,
        params.position.line,
        params.position.character,
        request_id=ls.protocol.msg_id,
        invoked=invoked,
    )
    return inline_items(answer, invoked)


async def completion(ls: SpeclspServer, params: types.CompletionParams) -> types.CompletionList:
    invoked = params.context is None or params.context.trigger_kind == types.CompletionTriggerKind.Invoked
    answer = await ls.session.complete(
        params.text_document.uri,
        params.position.line,
        params.position.character,
        request_id=ls.protocol.msg_id,
        invoked=invoked,
    )
    return completion_items(answer)


def stats(ls: SpeclspServer, params: Any) -> dict[str, Any]:
    return {**ls.state.stats_dict(), **ls.loop_watch.figures(), **ls.memory.figures()}


def did_accept(ls: SpeclspServer, params: Any) -> None:
    # pygls hands the params of methods it does not know over as a namedtuple.
    p = params._asdict() if hasattr(params, "_asdict") else params if isinstance(params, dict) else {}
    uri, text, kind = p.get("uri"), p.get("text"), p.get("kind", "full")
    if isinstance(uri, str) and isinstance(text, str):
        ls.state.accepted(uri, text, str(kind))
    else:
        log.warning("%s without uri/text ignored", DID_ACCEPT)


# The routing table: method, its registration options, its handler.
FEATURES: list[tuple[str, Any, Callable[..., Any]]] = [
    (types.INITIALIZE, None, initialize),
    (types.INITIALIZED, None, initialized),
    (types.SHUTDOWN, None, shutdown),
    (types.TEXT_DOCUMENT_DID_OPEN, None, did_open),
    (types.TEXT_DOCUMENT_DID_CHANGE, None, did_change),
    (types.TEXT_DOCUMENT_DID_CLOSE, None, did_close),
    (types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS, None, did_change_folders),
    (types.WORKSPACE_DID_CHANGE_CONFIGURATION, None, did_change_configuration),
    # pygls 2.1.1 advertises inline completion only when registered with options.
    (types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions(), inline_completion),
    (types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False), completion),
    (STATS, None, stats),
    (DID_ACCEPT, None, did_accept),
]


def build_server(config: Config | None = None) -> SpeclspServer:
    ls = SpeclspServer(config)
    for method, options, handler in FEATURES:
        ls.feature(method, options)(handler)
    ls.protocol.notification_methods.add(DID_ACCEPT)  # with an id it is refused, not applied
    return ls


# --- entry points (cli.run_server) ----------------------------------------------------------


def _quiet_pygls() -> None:
    root = logging.getLogger().getEffectiveLevel()
    if root > logging.DEBUG:
        # pygls logs every message it sends at INFO, document text included.
        logging.getLogger("pygls").setLevel(logging.WARNING)


class ListenError(OSError):
    """`--tcp` cannot listen where it was asked to."""


# A TCP connection must send its first bytes within this long to become the client: an
# idle socket (a scanner, a stuck process) held the single client slot for as long as it
# stayed open, and the editor that connected next was refused.
FIRST_BYTES_S = 5.0


def _exit(code: int) -> None:
    """Leave now: the stdin reader thread may be blocked in read() and would hold us up."""
    logging.shutdown()
    os._exit(code)


def config_from_flags(options: dict[str, str | None]) -> Config:
    """The default options with those given on the command line (None: not given), checked
    like the editor's options; raises ValueError naming the first bad flag."""
    config, warnings = parse_options({camel(k): v for k, v in options.items() if v}, Config())
    if warnings:
        raise ValueError(warnings[0].removeprefix("speclsp: ").replace("; using", "; the default would be"))
    return config


def serve_stdio(**options: str | None) -> None:
    """Serve one client over stdin/stdout until `exit` or EOF, then end the process.
    `options`: Config fields from the command line (model, device, dtype, backend, ...)."""
    _quiet_pygls()
    server = build_server(config_from_flags(options))
    log.info("speclsp %s serving on stdio (pid %d)", __version__, os.getpid())
    server.start_io()
    _exit(0 if server.protocol._shutdown else 1)


def serve_tcp(host: str, port: int, announce: Callable[[str, int], None] | None = None, **options: str | None) -> None:
    """Serve one client over TCP until it disconnects, then end the process.

    `announce(host, port)` gets the bound address (port 0 asks the system for a free one).
    """
    _quiet_pygls()
    server = build_server(config_from_flags(options))

    def bound(h: str, p: int) -> None:
        log.info("speclsp %s serving on %s:%d (pid %d)", __version__, h, p, os.getpid())
        if announce is not None:
            announce(h, p)

    try:
        server.start_tcp(host, port, announce=bound)
    except ListenError as e:
        log.info("%s", e)  # and one line for the user (the log may be stderr too: only at -v)
        print(f"speclsp: error: {e}", file=sys.stderr, flush=True)
        _exit(1)
    _exit(0 if server.protocol._shutdown else 1)
