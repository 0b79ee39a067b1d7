"""Regression tests from the third independent attack, each built from its reproduction,
against the real server (stdio or TCP) with the tiny model: a document that poisoned the
others, framing without a usable Content-Length, a log that grew with what clients sent,
`--tcp` that could not listen yet kept running, an idle connection that locked the editor
out, and cache files on disk that stopped the server from becoming ready.

Nothing here asserts a duration: waits are bounded only so that a hang fails.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import SERVER_ENV
from rawlsp import RawServer, frame, read_message, start_tcp


def completion_items(s: RawServer, uri: str, line: int, character: int) -> list:
    answer = s.inline(uri, line, character, timeout=60)
    assert "result" in answer, answer
    return answer["result"]["items"] if isinstance(answer["result"], dict) else answer["result"]


def test_a_lone_surrogate_in_one_document_never_empties_another_ones_completions(tiny_model_dir, tmp_path):
    """Repro: `"\\ud800"` (valid JSON) in one didOpen; the other document's prompt took a
    snippet of it, the tokenizer failed, and its completions came back empty."""
    s = RawServer(str(tiny_model_dir), tmp_path / "server.log", "-v")
    try:
        s.initialize(tmp_path, {"maxTokens": 8, "deadlineMs": 0})
        poisoned, clean = (tmp_path / "poisoned.py").as_uri(), (tmp_path / "clean.py").as_uri()
        body = "def area(self):\n    return self.width * self.height\n"
        # json.dumps writes the lone surrogate as the escape "\ud800", as a client would.
        s.write(
            frame(
                {
                    "jsonrpc": "2.0",
                    "method": "textDocument/didOpen",
                    "params": {
                        "textDocument": {
                            "uri": poisoned,
                            "languageId": "python",
                            "version": 1,
                            "text": "x = '\ud800'\n" + body * 3,
                        }
                    },
                }
            )
        )
        s.open(clean, body * 2 + "def ")
        assert completion_items(s, clean, 4, 4), "the clean document's completion came back empty"
        assert completion_items(s, poisoned, 7, 0) is not None
        # Half an emoji typed into the clean document: it still completes.
        s.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": clean, "version": 2},
                "contentChanges": [
                    {
                        "range": {"start": {"line": 4, "character": 4}, "end": {"line": 4, "character": 4}},
                        "text": "\ud83d",
                    }
                ],
            },
        )
        assert completion_items(s, clean, 4, 5) is not None
        stats = s.request("speclsp/stats", None)["result"]
        assert stats["errors"] == 0, stats
    finally:
        assert s.close() == 0


@pytest.mark.parametrize(
    "garbage",
    [
        b"Content-Length: -5\r\n\r\n" + json.dumps({"jsonrpc": "2.0", "id": 7, "method": "shutdown"}).encode(),
        json.dumps({"jsonrpc": "2.0", "id": 7, "method": "shutdown"}).encode(),  # no header at all
    ],
    ids=["negative length", "no header"],
)
def test_a_message_without_a_usable_content_length_gets_a_parse_error(tiny_model_dir, tmp_path, garbage):
    s = RawServer(str(tiny_model_dir), tmp_path / "server.log")
    try:
        s.initialize(tmp_path, wait_ready=False)
        # The next message follows at once (a body with no header ends only where it starts).
        s.write(garbage + frame({"jsonrpc": "2.0", "id": "next", "method": "speclsp/stats"}))
        error = s.wait(lambda m: "error" in m and m.get("id") is None, 30)
        assert error["error"]["code"] == -32700 and "Content-Length" in error["error"]["message"]
        assert "result" in s.response("next")  # the next message is served
        assert sum(1 for m in s.messages if "error" in m and m.get("id") is None) == 1  # one answer, not two
    finally:
        assert s.close() == 0


def test_the_log_does_not_grow_with_what_a_client_sends(tiny_model_dir, tmp_path):
    """Repro: 10 didChange for a never-opened 5 MB URI wrote 50 MB of log."""
    log = tmp_path / "server.log"
    s = RawServer(str(tiny_model_dir), log)
    try:
        s.initialize(tmp_path, wait_ready=False)
        uri = "file:///" + "a" * 1_000_000 + ".py"
        for v in range(10):
            s.notify(
                "textDocument/didChange",
                {"textDocument": {"uri": uri, "version": v}, "contentChanges": [{"text": "x" * 1000}]},
            )
        s.request("speclsp/stats", None)
        assert log.stat().st_size < 100_000, log.stat().st_size
        assert "didChange for a document that is not open" in log.read_text()
    finally:
        assert s.close() == 0


def test_tcp_that_cannot_listen_exits_1_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        for address in (f"127.0.0.1:{port}", "999.1.1.1:80"):
            r = subprocess.run(
                [sys.executable, "-m", "speclsp", "--tcp", address, "--model", str(tmp_path / "none")],
                capture_output=True,
                text=True,
                timeout=60,
                env=SERVER_ENV,
            )
            assert r.returncode == 1, (address, r.stderr)
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("speclsp: error: cannot listen on"), r.stderr


def test_an_idle_tcp_connection_never_locks_the_editor_out(tmp_path):
    """Repro: a process that connects and sends nothing held the single client slot; the
    editor connecting next was refused for as long as the idle socket stayed open."""
    proc, line = start_tcp("127.0.0.1:0", str(tmp_path / "none"))
    idle = None
    try:
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        idle = socket.create_connection(("127.0.0.1", port), timeout=30)  # says nothing, stays open
        editor = socket.create_connection(("127.0.0.1", port), timeout=30)
        editor.sendall(
            frame(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {"processId": None, "rootUri": None, "capabilities": {}},
                }
            )
        )
        reader = editor.makefile("rb")
        assert "capabilities" in read_message(reader)["result"]
        idle.settimeout(30)
        assert idle.recv(1) == b""  # the idle connection is dropped, never served
        editor.sendall(frame({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}))
        while read_message(reader).get("id") != 2:
            pass
        editor.sendall(frame({"jsonrpc": "2.0", "method": "exit"}))
        assert proc.wait(30) == 0
    finally:
        if idle is not None:
            idle.close()
        if proc.poll() is None:
            proc.kill()


def _cache_files(model: str) -> tuple[Path, Path]:
    """The calibration and acceptance files the server will read for `model` (float32, one
    thread, as conftest's servers run)."""
    from speclsp.local import calibration
    from speclsp.local import registry as models

    fp = calibration.fingerprint(SimpleNamespace(name=model, device="cpu", precision="float32"), 1)
    path = models.cache_dir() / "calibration" / (calibration.key_of(fp) + ".json")
    return path, path.with_suffix(".acceptance.json")


@pytest.mark.parametrize("content", ["null-values", "nested", "fifo"])
def test_corrupt_cache_files_never_stop_the_server_from_serving(tmp_path, content):
    """Repro: calibration values null, an acceptance file nested 100k deep or a FIFO in
    their place: the model failed to load or the server never became ready."""
    from speclsp.local import tiny

    model = str(tiny.build(tmp_path / f"model-{content}"))
    for path in _cache_files(model):
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "fifo":
            import os

            os.mkfifo(path)
        elif content == "nested":
            path.write_text("[" * 100_000 + "]" * 100_000)
        else:
            path.write_text(json.dumps({"grid": [0, 15], "costs": {"0": None, "15": None}, "python|2": None}))
    s = RawServer(model, tmp_path / "server.log", "-v")
    try:
        s.initialize(tmp_path, {"maxTokens": 4, "deadlineMs": 0})  # waits for "ready"
        uri = (tmp_path / "a.py").as_uri()
        s.open(uri, "def f(x):\n    return x\n" * 4)
        assert completion_items(s, uri, 8, 0) is not None
        assert "Traceback" not in (tmp_path / "server.log").read_text()
    finally:
        assert s.close() == 0


def test_a_document_over_half_the_index_is_refused_once_never_reindexed_per_keystroke(tiny_model_dir, tmp_path):
    """Repro: a 990,000-character CSV (over the index cap) evicted the other documents, was
    evicted by the next accepted completion and re-indexed at every keystroke (6-20 s each)."""
    log = tmp_path / "server.log"
    s = RawServer(str(tiny_model_dir), log, "-v")
    try:
        s.initialize(tmp_path, {"maxTokens": 4, "deadlineMs": 0, "indexMaxTokens": 10_000})
        small, big = (tmp_path / "small.py").as_uri(), (tmp_path / "big.csv").as_uri()
        s.open(small, "def area(self):\n    return self.width * self.height\n" * 4)
        rows = "".join(f"{i},{i * 7 % 1000},{i * 13 % 97}\n" for i in range(20_000))
        s.open(big, rows)
        for k in range(5):  # keystrokes at the end of the CSV, a completion after each
            s.notify(
                "textDocument/didChange",
                {
                    "textDocument": {"uri": big, "version": 2 + k},
                    "contentChanges": [
                        {
                            "range": {
                                "start": {"line": 20_000, "character": k},
                                "end": {"line": 20_000, "character": k},
                            },
                            "text": "7",
                        }
                    ],
                },
            )
            assert completion_items(s, big, 20_000, k + 1) is not None
            s.notify("speclsp/didAccept", {"uri": big, "text": f"{k},{k},{k}\n" * 3, "kind": "full"})
        assert completion_items(s, small, 8, 0) is not None
        stats = s.request("speclsp/stats", None)["result"]
        assert stats["notIndexed"] == [big] and stats["errors"] == 0
        text = log.read_text()
        assert text.count("not indexing") == 1 and "evicting" not in text
    finally:
        assert s.close() == 0


def test_three_hundred_folders_in_one_change_are_followed_once(tiny_model_dir, tmp_path, tmp_path_factory):
    """Repro: one didChangeWorkspaceFolders adding 300 folders with 300 documents open froze
    the event loop 9.7 s (each folder re-routed every document); removing them 8.6 s."""
    from rawlsp import record

    s = RawServer(str(tiny_model_dir), tmp_path / "server.log")
    try:
        s.initialize(tmp_path, {"maxTokens": 4, "deadlineMs": 0})
        folders = [{"uri": (tmp_path / f"f{i}").as_uri(), "name": f"f{i}"} for i in range(300)]
        for i in range(300):
            s.open(f"{folders[i]['uri']}/m.py", f"def f{i}(x):\n    return x + {i}\n")
        lags = {}
        for what in ("added", "removed"):
            s.notify(
                "workspace/didChangeWorkspaceFolders",
                {
                    "event": {
                        "added": folders if what == "added" else [],
                        "removed": folders if what == "removed" else [],
                    }
                },
            )
            stats = s.request("speclsp/stats", None, timeout=120)["result"]
            lags[what] = stats["loopLagMaxMs"]
            assert stats["documents"] == 300
        assert completion_items(s, f"{folders[7]['uri']}/m.py", 2, 0) is not None
        # A pass per folder over every document held the loop 9,700 ms in the attack and
        # ~1,200 ms here on removal; once for the whole change it is ~1 ms. Recorded, not
        # asserted: the count below is what a per-folder pass would break.
        record(tmp_path_factory, "folders_300", {"loop_lag_max_ms": lags})
    finally:
        assert s.close() == 0


def test_a_change_of_three_hundred_folders_is_one_pass_over_the_documents(monkeypatch):
    from speclsp.lsp.config import Config
    from speclsp.lsp.documents import DocumentStore
    from speclsp.lsp.state import ServerState

    passes = []
    real = DocumentStore.folders_changed
    monkeypatch.setattr(DocumentStore, "folders_changed", lambda self: (passes.append(1), real(self))[1])
    state = ServerState(Config(), None)
    try:
        folders = [f"file:///w/f{i}" for i in range(300)]
        for i, f in enumerate(folders):
            state.open(f"{f}/m.py", f"/w/f{i}/m.py", "python", 1, f"x = {i}\n")
        state.change_folders(added=folders)
        assert len(passes) == 1
        assert state.documents.get(f"{folders[7]}/m.py").folder == folders[7]
        state.change_folders(removed=folders)
        assert len(passes) == 2
    finally:
        state.shutdown()


@pytest.mark.parametrize("client", ["Visual Studio Code", "Neovim"])
def test_a_crlf_document_is_answered_in_its_line_ending_but_neovim_gets_lf(trained_model_dir, tmp_path, client):
    from trainedcases import at_body

    document, expected = at_body("    def scale(self, factor):")
    s = RawServer(str(trained_model_dir), tmp_path / "server.log")
    try:
        s.request(
            "initialize",
            {
                "processId": None,
                "rootUri": tmp_path.as_uri(),
                "capabilities": {},
                "clientInfo": {"name": client},
                "initializationOptions": {"maxTokens": 48},
            },
        )
        s.notify("initialized", {})
        s.wait(lambda m: m.get("method") == "speclsp/status" and m["params"]["state"] == "ready", 60)
        uri = (tmp_path / "scale.py").as_uri()
        text = document.replace("\n", "\r\n")
        s.open(uri, text)
        last = text.split("\r\n")[-1]
        (item, *_) = completion_items(s, uri, text.count("\r\n"), len(last))
        assert item["insertText"] == (expected if client == "Neovim" else expected.replace("\n", "\r\n"))
    finally:
        assert s.close() == 0


def test_a_reload_that_starts_during_the_debounce_is_answered_not_an_internal_error(tiny_model_dir, tmp_path):
    """Found by the long soak: an automatic request waits a moment (debounce) while the
    user types fast; a configuration change in that moment started a reload, and the
    request then used the model that was gone (AttributeError, an internal error to the
    editor). It is answered as any request during a load is: empty, "model_loading"."""
    s = RawServer(str(tiny_model_dir), tmp_path / "server.log")
    try:
        s.initialize(tmp_path, {"maxTokens": 4})
        uri = (tmp_path / "a.py").as_uri()
        s.open(uri, "x = ")
        for i, ch in enumerate("abc"):  # fast typing: the next automatic request waits ~75 ms
            s.notify(
                "textDocument/didChange",
                {
                    "textDocument": {"uri": uri, "version": 2 + i},
                    "contentChanges": [
                        {
                            "range": {"start": {"line": 0, "character": 4 + i}, "end": {"line": 0, "character": 4 + i}},
                            "text": ch,
                        }
                    ],
                },
            )
            time.sleep(0.1)
        msg_id = s.send_request(
            "textDocument/inlineCompletion",
            {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 7}, "context": {"triggerKind": 2}},
        )
        s.notify(
            "workspace/didChangeConfiguration",
            {"settings": {"speclsp": {"maxTokens": 4, "backend": "openai", "endpoint": "http://127.0.0.1:9/v1"}}},
        )
        got = s.response(msg_id, timeout=60)
        assert "error" not in got, got
        assert isinstance(got["result"]["items"], list)
        assert "AttributeError" not in s.log_file.read_text()
    finally:
        assert s.close() == 0
