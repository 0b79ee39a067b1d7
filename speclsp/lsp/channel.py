"""The ways out to the editor: `EditorChannel` (what the state and the session may send:
status, progress, streaming updates, warnings) and `ClientWriter` (pygls' writer, quiet
once the client is gone)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lsprotocol import types

if TYPE_CHECKING:
    from .server import SpeclspServer

log = logging.getLogger(__name__)

INLINE_UPDATE = "speclsp/inlineCompletionUpdate"
STATUS = "speclsp/status"


class EditorChannel:
    """The session's way to the editor (`session.ClientChannel`): notifications and progress."""

    def __init__(self, ls: SpeclspServer):
        self.ls = ls
        self.supports_progress = False
        self._token: str | None = None
        self._chain: asyncio.Future | None = None

    def status(self, state: str, message: str) -> None:
        s = self.ls.state
        model = (s.config.remote_model or "(server's first)") if s.config.backend == "openai" else s.config.model
        payload = {"state": state, "message": message, "model": model, "device": s.model.device}
        # After any progress messages queued before it, so "ready" follows the progress end.
        self._then(lambda: self.ls.protocol.notify(STATUS, payload))

    def inline_update(
        self, uri: str, version: int, line: int, character: int, text: str, done: bool, request_id: Any
    ) -> None:
        self.ls.protocol.notify(
            INLINE_UPDATE,
            {
                "uri": uri,
                "version": version,
                "position": {"line": line, "character": character},
                "text": text,
                "done": done,
                "requestId": request_id,
            },
        )

    def warn(self, message: str) -> None:
        """A message shown to the user; in order with the status (the state first, then what
        explains it: an editor that sees the message has the status)."""
        log.warning("%s", message)
        self._then(
            lambda: self.ls.window_show_message(
                types.ShowMessageParams(type=types.MessageType.Warning, message=message)
            )
        )

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
                token, types.WorkDoneProgressBegin(title="speclsp", message=message, cancellable=False)
            )

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
        """Run `action` (a function or coroutine function) after everything queued before: at
        once when nothing is queued, so that a status or message sent before an answer reaches
        the editor before it (a test saw "ready" arrive after the suggestion it was about).
        Progress, status and messages keep the order they were sent in."""
        previous = self._chain
        if previous is None or previous.done():
            try:
                result = action()
            except Exception:  # the caller goes on (it may be finishing a suggestion)
                log.exception("a message to the editor failed")
                result = None
            self._chain = asyncio.ensure_future(result) if asyncio.iscoroutine(result) else None
            return

        async def step() -> None:
            await asyncio.gather(previous, return_exceptions=True)
            result = action()
            if asyncio.iscoroutine(result):
                await result

        self._chain = asyncio.ensure_future(step())


class ClientWriter:
    """pygls' writer, quiet when the client is gone: the first failed write calls `lost`
    (one log line, shutdown), later ones do nothing. pygls would log a traceback per
    message still in flight, and re-raise into every handler."""

    def __init__(self, writer: Any, lost: Callable[[], None]) -> None:
        self.writer, self.lost, self.closed = writer, lost, False

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.writer.write(data)
        except (BrokenPipeError, ConnectionResetError, ValueError):  # ValueError: write to a closed file
            self.closed = True
            self.lost()

    def close(self) -> None:
        try:
            self.writer.close()
        except OSError:
            pass
