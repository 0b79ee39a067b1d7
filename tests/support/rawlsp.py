"""A raw LSP client for the reliability tests: it writes framed bytes (or any bytes) to the
real server's stdin and reads what comes back on a thread, so tests can send what no
well-behaved client library would: invalid JSON, wrong framing, wrong types."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from conftest import SERVER_ENV, server_command


def frame(msg: Any) -> bytes:
    body = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def read_message(reader) -> dict:
    """One framed message from a binary file object (a socket's makefile("rb"))."""
    length = 0
    while (h := reader.readline()).strip():
        if h.lower().startswith(b"content-length"):
            length = int(h.split(b":")[1])
    return json.loads(reader.read(length))


def start_tcp(address: str, model: str) -> tuple[subprocess.Popen, str]:
    """`speclsp --tcp ADDRESS` with `model`; returns the process and the line it announced
    its bound address with (stderr's first line)."""
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "speclsp", "--tcp", address, "--model", model],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=SERVER_ENV,
        text=True,
    )
    return proc, proc.stderr.readline()


def rss_kb(pid: int) -> int:
    """Resident memory of a process, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RawServer:
    """`python -m speclsp --stdio` with pipes (or `--tcp 127.0.0.1:0` and a socket, with
    `tcp=True`); every message it sends is kept in order."""

    def __init__(self, model: str, log_file: Path, *args: str, env: dict | None = None, tcp: bool = False):
        self.log_file = log_file
        command = server_command(model, "--dtype", "float32", "--log-file", str(log_file), *args)
        if tcp:
            command[command.index("--stdio")] = "--tcp=127.0.0.1:0"
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL if tcp else subprocess.PIPE,
            stdout=subprocess.DEVNULL if tcp else subprocess.PIPE,
            stderr=subprocess.PIPE if tcp else subprocess.DEVNULL,
            env=env or SERVER_ENV,
        )
        self.sock: socket.socket | None = None
        if tcp:  # stderr's first line says where it listens
            line = self.proc.stderr.readline().decode()
            match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            assert match, f"no address announced: {line!r}"
            self.port = int(match.group(1))
            threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # never fills up
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            self.sock.settimeout(None)
            self._out = self.sock.makefile("rb")
        else:
            self._out = self.proc.stdout
        self.messages: list[dict] = []
        self.cv = threading.Condition()
        self.next_id = 1000
        self.sent = 0  # message bodies written
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        out = self._out
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    return
                if line.strip() == b"":
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = out.read(length)
            with self.cv:
                self.messages.append(json.loads(body))
                self.cv.notify_all()

    # --- sending ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.sock is not None:
            self.sock.sendall(data)
            return
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, msg: Any) -> None:
        self.sent += 1
        self.write(frame(msg))

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method: str, params: Any = None, timeout: float = 30) -> dict:
        msg_id = self.send_request(method, params)
        return self.response(msg_id, timeout)

    def send_request(self, method: str, params: Any = None) -> str:
        # String ids longer than any the fuzz test generates: a fuzzed message can never
        # share an id with a request of ours and be mistaken for its answer.
        self.next_id += 1
        msg_id = f"rawlsp-{self.next_id}"
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id

    # --- receiving -------------------------------------------------------------------------

    def wait(self, predicate, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for m in self.messages:
                    if predicate(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no such message (server exit code {self.proc.poll()})")
                self.cv.wait(min(left, 0.2))

    def response(self, msg_id: Any, timeout: float = 30) -> dict:
        return self.wait(
            lambda m: "method" not in m and m.get("id") == msg_id and ("result" in m or "error" in m), timeout
        )

    def received(self, method: str) -> list[dict]:
        with self.cv:
            return [m for m in self.messages if m.get("method") == method]

    # --- lifecycle -------------------------------------------------------------------------

    def initialize(self, root: Path, options: dict | None = None, wait_ready: bool = True) -> dict:
        result = self.request(
            "initialize",
            {
                "processId": None,
                "rootUri": root.as_uri(),
                "capabilities": {},
                "workspaceFolders": [{"uri": root.as_uri(), "name": root.name}],
                "initializationOptions": options or {},
            },
        )
        self.notify("initialized", {})
        if wait_ready:
            self.wait(lambda m: m.get("method") == "speclsp/status" and m["params"]["state"] == "ready", 60)
        return result

    def open(self, uri: str, text: str, version: int = 1, language: str = "python") -> None:
        self.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": language, "version": version, "text": text}},
        )

    def inline(self, uri: str, line: int, character: int, invoked: bool = True, timeout: float = 30) -> dict:
        return self.request(
            "textDocument/inlineCompletion",
            {
                "textDocument": {"uri": uri},
                "position": {"line": line, "character": character},
                "context": {"triggerKind": 1 if invoked else 2},
            },
            timeout,
        )

    def close(self) -> int:
        """shutdown + exit; returns the exit code."""
        if self.proc.poll() is None:
            try:
                self.request("shutdown", None, 30)
                self.notify("exit", None)
            except (AssertionError, OSError):
                pass
        try:
            return self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            if self.sock is not None:
                self.sock.close()
            else:
                self.proc.stdin.close()


def record(tmp_path_factory, section: str, figures: dict) -> Path:
    """Add `figures` under `section` to reliability-figures.json in pytest's base temp
    directory, and print them (shown with -s); docs/reliability.md quotes them."""
    path = tmp_path_factory.getbasetemp() / "reliability-figures.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[section] = figures
    path.write_text(json.dumps(data, indent=2))
    print(f"\n[reliability] {section}: {json.dumps(figures)}  ({path})")
    return path
