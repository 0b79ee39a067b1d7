"""The transport: JSON-RPC framing, message checks and readers; pygls does the dispatch.

Bad input never ends the server (docs/reliability.md): this message loop replaces pygls'
own so that framing errors, oversized messages, invalid JSON, malformed requests and
requests before `initialize` each get the JSON-RPC error the specifications ask for (or are
dropped, for notifications) and the loop reads on. `SpeclspProtocol` is pygls' protocol
plus those checks, our experimental capability in the `initialize` result, and document
notifications that bypass pygls' workspace (the session keeps the only copy).

This file is one concern (bytes in, checked messages out, errors back) at ~440 lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Callable
from typing import Any, SupportsFloat, cast

import attrs
from cattrs import transform_error
from lsprotocol import types
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    JsonRPCResponseMessage,
    RPCNotification,
    RPCRequest,
)
from pygls.protocol.language_server import lsp_method

from .. import __version__

log = logging.getLogger(__name__)

# A message body above this is skipped unread (in chunks, so it never sits in memory): no
# editor sends one (a 10 MB didOpen is ~10 MB of JSON), and reading it whole could exhaust
# memory on a lying Content-Length.
MAX_MESSAGE_BYTES = 64 * 2**20
MAX_HEADER_LINE = 8192  # a longer header line is garbage, read and dropped in pieces
SKIP_CHUNK = 2**20
_CONTENT_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*(\d+)$", re.IGNORECASE)
# A header inside what a Content-Length claims as the body: the claim runs past the end of
# its message. No valid JSON body holds one: a raw line break cannot be inside a JSON string,
# and outside strings JSON has no such words.
_NEXT_HEADER = re.compile(rb"content-length[ \t]*:[ \t]*\d+[ \t]*\r?\n")  # matched in lowercase
HEADER_OVERLAP = 256  # bytes kept between reads, so a header split across two reads is found


def _header_in(data: bytes) -> int:
    """Where a `Content-Length: N` header line starts in `data`, or -1 (~1 ms per MiB)."""
    low = data.lower()
    at = low.find(b"content-length")
    while at >= 0:
        if _NEXT_HEADER.match(low, at):
            return at
        at = low.find(b"content-length", at + 1)
    return -1


PARSE_ERROR = types.ErrorCodes.ParseError.value  # -32700
INVALID_REQUEST = types.ErrorCodes.InvalidRequest.value  # -32600
METHOD_NOT_FOUND = types.ErrorCodes.MethodNotFound.value  # -32601
INVALID_PARAMS = types.ErrorCodes.InvalidParams.value  # -32602
SERVER_NOT_INITIALIZED = types.ErrorCodes.ServerNotInitialized.value  # -32002


def _describe(exc: BaseException) -> str:
    """What was wrong with a message's structure: paths and expected types, never values
    (the values may be document text, which must not reach the log)."""
    try:
        return "; ".join(transform_error(exc, path="$"))[:500]
    except Exception:
        return type(exc).__name__


def _strict_scalars(converter: Any) -> None:
    """Make the converter refuse a wrong JSON type where LSP says integer, string, boolean
    or decimal, instead of converting it (`int("0")`, `int(1.5)`, `int(True)`, `str(5)`):
    such params are then InvalidParams (-32602), as docs/protocol.md says."""

    def strict(kind: type, accept: tuple[type, ...]):
        def structure(value: Any, _: Any) -> Any:
            if isinstance(value, bool) and kind is not bool:
                raise TypeError(f"expected {kind.__name__}, got a boolean")
            if not isinstance(value, accept):
                raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
            return float(cast(SupportsFloat, value)) if kind is float else value

        return structure

    converter.register_structure_hook(int, strict(int, (int,)))
    converter.register_structure_hook(str, strict(str, (str,)))
    converter.register_structure_hook(bool, strict(bool, (bool,)))
    converter.register_structure_hook(float, strict(float, (int, float)))


class SpeclspProtocol(LanguageServerProtocol):
    """pygls' protocol plus our experimental capability in the `initialize` result, and
    the checks on every incoming message (`receive`) that keep bad input from hurting."""

    def __init__(self, server, converter):
        _strict_scalars(converter)
        super().__init__(server, converter)
        self.initialized = False  # an `initialize` request has been handled
        self.received = 0  # message bodies read (for the reliability tests' figures)
        self.rejected = 0  # of those, answered with an error or dropped as malformed
        self.notification_methods: set[str] = set()  # our own notifications (the server adds them)
        # Work the handled messages left queued elsewhere (the index worker's updates): the
        # reader takes no more messages while it is over MAX_BACKLOG (`read_messages`).
        self.backlog: Callable[[], float] = lambda: 0.0  # how full the index queue is (1.0: full)

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        self.initialized = True
        result = yield from super().lsp_initialize(params)
        result.capabilities.experimental = {
            "speclsp": {"inlineCompletionUpdate": True, "stats": True, "version": __version__}
        }
        return result

    # The session keeps the documents; pygls' workspace would keep a second copy of every
    # text (10 MB twice for a 10 MB file) and can raise on edits the session clamps. Plain
    # methods, not generators like pygls' own: pygls registers a future for every generator
    # (and coroutine) handler of a notification and never removes it (see `_forget_finished`).
    # Our document handlers are plain functions, called here directly.
    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> None:
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_OPEN)) is not None:
            handler(params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> None:
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            handler(params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            handler(params)

    # --- incoming messages ---------------------------------------------------------------

    def reply_error(self, msg_id: Any, code: int, message: str) -> None:
        """An error response; `msg_id` None when the request's id cannot be known."""
        self.rejected += 1
        self._send_data({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}})

    def is_notification_method(self, method: str) -> bool:
        """A method that LSP (or we) define as a notification: it never has an id."""
        kind = types.METHOD_TO_TYPES.get(method, (None,))[0]
        if kind is not None:
            return "id" not in attrs.fields_dict(kind)
        return method in self.notification_methods

    def _refusal(self, method: str) -> tuple[int, str] | None:
        """Why a request (a message with an id) for `method` is answered with an error
        before its params are read, or None. A notification method sent with an id is not
        applied: a request must get exactly one response, and a notification gets none."""
        if not self.initialized and method != types.INITIALIZE:
            return SERVER_NOT_INITIALIZED, f"{method[:80]}: the server is not initialized yet"
        if self.is_notification_method(method):
            return METHOD_NOT_FOUND, (
                f"Method not found: {method[:80]} is a notification and was sent with an id; not applied"
            )
        if method not in self.fm.features and method not in self.fm.builtin_features:
            return METHOD_NOT_FOUND, f"Method not found: {method[:80]}"
        return None

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
        full = method if isinstance(method, str) else ""  # (it is checked below)
        name = full[:80]  # for log lines
        good_id = isinstance(msg_id, (int, str)) and not isinstance(msg_id, bool)
        notification = "id" not in data and isinstance(method, str)
        if (
            data.get("jsonrpc") != "2.0"
            or ("method" in data and not isinstance(method, str))
            or ("id" in data and not good_id)
            or ("method" not in data and not ("id" in data and ("result" in data or "error" in data)))
        ):
            if notification:
                log.warning("malformed %s notification dropped (not JSON-RPC 2.0)", name)
                self.rejected += 1
            else:
                log.warning(
                    "invalid request (id %r): not a JSON-RPC 2.0 request, notification or response",
                    msg_id if good_id else None,
                )
                self.reply_error(
                    msg_id if good_id else None,
                    INVALID_REQUEST,
                    "Invalid Request: not a JSON-RPC 2.0 request, notification or response",
                )
            return
        if "method" in data and "id" in data and (refusal := self._refusal(full)) is not None:
            code, text = refusal
            log.warning("req %s: %s refused (%d)", msg_id, name, code)
            self.reply_error(msg_id, code, text)
            return
        if "method" in data and "params" not in data:
            data["params"] = None  # JSON-RPC lets a request or notification omit its params
        try:
            message = self._structure(data)
        except Exception as e:
            detail = _describe(e)
            if notification:
                log.warning("%s notification with invalid params dropped: %s", name, detail)
                self.rejected += 1
            elif "method" in data:
                log.warning("req %s: %s with invalid params: %s", msg_id, name, detail)
                self.reply_error(msg_id, INVALID_PARAMS, f"Invalid params for {name}: {detail}")
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

    def _forget_finished(self) -> None:
        """Drop finished futures from pygls' `_request_futures`. pygls removes a future only
        when it answers a request; notifications handled by a coroutine or generator, and the
        handlers a generator handler yields to, are registered under fresh uuids that nothing
        removed, so every such message left one behind. Pruned here, before each message,
        rather than in a done callback: pygls' `shutdown` cancels the futures while iterating
        over the table, and a concurrent future runs its callbacks inside `cancel()`."""
        finished = [key for key, future in self._request_futures.items() if future.done()]
        for key in finished:
            del self._request_futures[key]

    def handle_message(self, message) -> None:
        self._forget_finished()
        method = str(getattr(message, "method", ""))
        if isinstance(message, RPCRequest):
            if not self.initialized and method != types.INITIALIZE:
                log.warning("req %s: %s before initialize", message.id, method[:80])
                self.reply_error(
                    message.id, SERVER_NOT_INITIALIZED, f"{method[:80]}: the server is not initialized yet"
                )
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


class StdinReader:
    """Blocking reads of stdin on a thread, awaited on the event loop (`_Input` buffers)."""

    def __init__(self, stream, executor):
        self.stream, self.executor = stream, executor
        self._read_some = getattr(stream, "read1", stream.read)

    async def read_some(self, n: int) -> bytes:
        """Up to `n` bytes, as soon as some are there (empty at the end of the stream): a
        lying Content-Length must not make us wait for bytes the client never sends."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._read_some, n)


class SocketReader:
    """An asyncio StreamReader (TCP) behind the same call."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader

    async def read_some(self, n: int) -> bytes:
        return await self.reader.read(n)


READ_CHUNK = 1 << 16  # bytes asked of the stream at once (what is there comes at once)


class _Input:
    """A reader behind a buffer: lines and body bytes are cut from chunks of what arrived.

    Reading stdin costs a round trip to a thread per call: a call per header line and per
    body capped how many messages a second the server could take in. One read now takes
    everything the client has written so far, up to READ_CHUNK, and many messages are cut
    from it on the loop, by position (cutting the rest off again at every line copied the
    chunk once per line). Bytes handed back (`unread`) come first.
    """

    def __init__(self, reader):
        self.reader = reader
        self.buf = b""
        self.pos = 0  # what of `buf` is consumed

    def unread(self, data: bytes) -> None:
        self.buf, self.pos = data + self.buf[self.pos :], 0

    async def _fill(self, at_least: int = 0) -> bool:
        chunk = await self.reader.read_some(max(READ_CHUNK, at_least))
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        return bool(chunk)

    def _take(self, end: int) -> bytes:
        got = self.buf[self.pos : end]
        self.pos = end
        if self.pos >= len(self.buf):
            self.buf, self.pos = b"", 0
        return got

    async def readline(self, limit: int) -> bytes:
        """Up to and including the next b"\n", at most `limit` bytes; b"" at the end."""
        while True:
            end = self.buf.find(b"\n", self.pos, self.pos + limit)
            if end >= 0 or len(self.buf) - self.pos >= limit:
                return self._take(end + 1 if end >= 0 else self.pos + limit)
            if not await self._fill():
                return self._take(len(self.buf))  # the end of the stream

    async def read_some(self, n: int) -> bytes:
        """Up to `n` bytes, as soon as some are there (b"" at the end): a lying
        Content-Length must not make us wait for bytes the client never sends."""
        if self.pos >= len(self.buf) and not await self._fill(n):
            return b""
        return self._take(min(len(self.buf), self.pos + n))


async def read_messages(reader, protocol: SpeclspProtocol, stop: threading.Event, first: bytes = b"") -> None:
    """The message loop: `Content-Length` framing, then `protocol.receive` per body.

    Header lines other than Content-Length (and Content-Type) are logged and skipped, which
    also resynchronises after garbage: the next line ending in `Content-Length: N` starts
    a message. A body is read as it arrives and searched for a `Content-Length: N` header
    line: one inside the claimed body means the claim runs past its message (a lying or
    miscounted Content-Length); that message is dropped with one ParseError (id null) and
    the header starts the next one. A body over MAX_MESSAGE_BYTES is skipped in chunks
    (searched the same way, never held whole) with one InvalidRequest (id null). Ends at
    the end of the stream. `first`: bytes already read from the stream (they come first).
    """
    inp = _Input(reader)
    inp.unread(first)
    while not stop.is_set():
        length: int | None = None
        lost = False  # a message without a usable Content-Length was dropped (answered once)

        def dropped(why: str) -> None:
            nonlocal lost
            if not lost:
                lost = True
                protocol.received += 1
                protocol.reply_error(None, PARSE_ERROR, f"Parse error: {why}; the message was dropped")

        while True:  # headers, up to the empty line
            line = await inp.readline(MAX_HEADER_LINE)
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
                if stripped[: m.start()].strip()[:1] in (b"{", b"["):  # a body that had no header
                    log.warning("a message body without a Content-Length header (%d bytes) dropped", m.start())
                    dropped("a message came without a Content-Length header")
                digits = m.group(1)
                length = int(digits) if len(digits) <= 18 else 10**18
            elif stripped.lower().startswith(b"content-length"):
                log.warning("invalid Content-Length header (%d bytes): skipping to the next header", len(line))
                dropped("its Content-Length header is not a byte count")
            elif not stripped.lower().startswith(b"content-type"):
                log.warning("skipping a header line that is not Content-Length (%d bytes)", len(line))
                if stripped[:1] in (b"{", b"["):
                    dropped("a message came without a Content-Length header")
        too_big = length > MAX_MESSAGE_BYTES
        if too_big:
            log.warning("message of %d bytes is over the %d-byte limit: skipped unread", length, MAX_MESSAGE_BYTES)
        body = bytearray()
        got, seen = 0, b""  # bytes of the body read; the last HEADER_OVERLAP of them
        resynced = False
        while got < length:
            chunk = await inp.read_some(min(length - got, SKIP_CHUNK))
            if not chunk:
                log.warning("the stream ended inside a message (%d of %d bytes)", got, length)
                return
            window = seen + chunk
            if (at := _header_in(window)) >= 0:
                inp.unread(window[at:])  # the next message starts there
                log.warning(
                    "Content-Length %d runs past the next header (at byte %d of the body): "
                    "message dropped, reading on from that header",
                    length,
                    got - len(seen) + at,
                )
                protocol.received += 1
                protocol.reply_error(
                    None,
                    PARSE_ERROR,
                    "Parse error: the message's Content-Length runs into the "
                    "next message's header; the message was dropped",
                )
                resynced = True
                break
            got += len(chunk)
            seen = window[-HEADER_OVERLAP:]
            if not too_big:
                body += chunk
        if resynced:
            continue
        if too_big:
            protocol.received += 1
            protocol.reply_error(
                None,
                INVALID_REQUEST,
                f"Invalid Request: a message of {length} bytes is over the {MAX_MESSAGE_BYTES}-byte limit; skipped",
            )
            continue
        try:
            protocol.receive(bytes(body))
        except Exception:  # a bug of ours: the message is lost, the server is not
            log.exception("failed to handle a message of %d bytes", length)
        await asyncio.sleep(0)  # messages cut from one chunk: the loop's other work between them
        if protocol.backlog() > 1.0:
            # Messages come in faster than the index worker applies them (thousands of
            # didOpen at once): wait for it rather than queue their texts without bound.
            while protocol.backlog() > 0.5:
                await asyncio.sleep(0.005)
