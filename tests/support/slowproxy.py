"""A throttling TCP proxy that stands in for a slow network between speclsp and a real server
(tests/server/test_vllm_faults.py puts it in front of vLLM for the cancel from the editor,
so that the editor is still being streamed when the cancel lands).

`SlowProxy(port).start()` listens on 127.0.0.1 (a free port) in a thread. Requests go
through at once; what the server sends back is read as it comes and forwarded in pieces of
`piece` bytes, `delay` s apart. Either side going away ends the connection on both at once:
the client closing makes the server see the disconnect (vLLM aborts the request), and the
server closing (killed) resets the client's connection, dropping what is still queued, as a
link that dies with the server would.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class SlowProxy:
    def __init__(self, target_port: int, piece: int = 256, delay: float = 0.05):
        self.target_port, self.piece, self.delay = target_port, piece, delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> SlowProxy:
        threading.Thread(target=self._loop.run_forever, name="slow-proxy", daemon=True).start()
        listen = asyncio.start_server(self._connection, "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(listen, self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()  # nothing listens behind the proxy
            return
        pieces: asyncio.Queue[bytes] = asyncio.Queue()

        async def upload() -> None:
            while data := await client_r.read(65536):
                server_w.write(data)
                await server_w.drain()

        async def receive() -> None:
            while data := await server_r.read(65536):
                for i in range(0, len(data), self.piece):
                    pieces.put_nowait(data[i : i + self.piece])

        async def deliver() -> None:
            while True:
                data = await pieces.get()
                await asyncio.sleep(self.delay)
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.ensure_future(t()) for t in (upload, receive, deliver)]
        with contextlib.suppress(OSError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_w, server_w):
            writer.transport.abort()
        await asyncio.gather(*tasks, return_exceptions=True)
