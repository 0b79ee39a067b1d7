"""A small OpenAI-compatible server that misbehaves on purpose, for the remote backend's
fault tests (the real engine, vLLM, is in tests/server/test_vllm_e2e.py).

`FakeServer().start()` listens on 127.0.0.1 (a free port) in a thread. Its `mode` says
what `POST /v1/completions` does next:

    ok          stream `text` in chunks of `chunk` characters, `delay` s apart, then [DONE]
    http500     HTTP 500 with an OpenAI-style error body
    malformed   one good chunk, then an event whose JSON is cut off
    slow        one good chunk, then keep-alive comments until the client goes away
    dies        one good chunk, then the connection is closed without an end
    error_event one good chunk, then a `{"error": ...}` event (how vLLM reports failures)
    busy        HTTP 429 with `Retry-After: 60`
    huge_error  HTTP 500 with a body of `huge` bytes
    huge_line   one good chunk, then one SSE line of `huge` bytes
    hostile     stream `text` as it is (set it to hold special tokens, escapes, NUL)
    nested      (GET /v1/models) a model list nested 100,000 arrays deep

`GET /v1/models` lists `models`. It records every request's body and Authorization header
(`requests`), and whether a streaming client went away before the end (`disconnects`).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeServer:
    def __init__(self, text: str = "return self.width * self.height\n\n", models: tuple[str, ...] = ("fake",)):
        self.text = text
        self.models = models
        self.mode = "ok"
        self.chunk = 4
        self.delay = 0.01
        self.requests: list[dict[str, Any]] = []
        self.disconnects = 0
        self.httpd: ThreadingHTTPServer | None = None
        self.port = 0
        self.huge = 10 << 20

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, port: int = 0) -> FakeServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/v1/models":
                    return self._json(404, {"error": {"message": "not found"}})
                if fake.mode == "nested":
                    return self._raw(200, b"[" * 100_000 + b"]" * 100_000)
                if fake.mode in ("models_silent", "models_drip"):  # never a whole answer (for 30 s)
                    if fake.mode == "models_drip":
                        self.send_response(200)
                        self.send_header("Content-Length", "1000")
                        self.end_headers()
                    try:
                        for _ in range(300):
                            time.sleep(0.1)
                            if fake.mode == "models_drip":
                                self.wfile.write(b" ")
                                self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        fake.disconnects += 1
                    return
                self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in fake.models]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if body.get("model") not in fake.models:
                    return self._json(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
                if fake.mode == "http500":
                    return self._json(500, {"error": {"message": "engine crashed", "type": "InternalServerError"}})
                if fake.mode == "busy":
                    return self._json(429, {"error": {"message": "too many requests"}}, {"Retry-After": "60"})
                if fake.mode == "huge_error":
                    return self._raw(500, b"x" * fake.huge)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    self._stream(body)
                except (BrokenPipeError, ConnectionResetError):
                    fake.disconnects += 1

            def _event(self, payload: str) -> None:
                self.wfile.write(f"data: {payload}\n\n".encode())
                self.wfile.flush()

            def _chunk(self, text: str, finish: str | None = None) -> None:
                self._event(
                    json.dumps(
                        {
                            "id": "c",
                            "object": "text_completion",
                            "model": "fake",
                            "choices": [{"index": 0, "text": text, "finish_reason": finish}],
                        }
                    )
                )

            def _stream(self, body: dict) -> None:
                mode, text = fake.mode, fake.text
                for stop in body.get("stop") or ():
                    if stop in text:
                        text = text[: text.index(stop) + len(stop)]
                text = text[: max(0, body.get("max_tokens", 64)) * 4]
                pieces = [text[i : i + fake.chunk] for i in range(0, len(text), fake.chunk)]
                self.wfile.write(b": keep-alive\n\n")
                if mode == "huge_line":
                    self._chunk(pieces[0])
                    self.wfile.write(b"data: " + b"y" * fake.huge + b"\n\n")
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if mode not in ("ok", "hostile"):
                    self._chunk(pieces[0])
                    if mode == "malformed":
                        self.wfile.write(b'data: {"choices": [{"text": "x\n\n')
                    elif mode == "error_event":
                        self._event(json.dumps({"error": {"message": "out of KV cache", "code": 500}}))
                    elif mode == "slow":
                        while True:
                            time.sleep(0.05)
                            self.wfile.write(b": still here\n\n")
                            self.wfile.flush()
                    self.wfile.flush()
                    self.close_connection = True
                    return
                for piece in pieces:
                    time.sleep(fake.delay)
                    self._chunk(piece)
                self._chunk("", "stop")
                self._event(json.dumps({"choices": [], "usage": {"completion_tokens": len(pieces)}}))
                self._event("[DONE]")

            def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
                self._raw(status, json.dumps(payload).encode(), headers)

            def _raw(self, status: int, data: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def completions(self) -> list[dict]:
        return [r["body"] for r in self.requests if r["path"].endswith("/completions")]
