"""Races, and work or memory that grew with the input: a model load cancelled by closing a
document named `model` (and a failed load never retried), two TCP clients connecting at
once; the word before the cursor on a 100k-character line, history at the index cap,
option values echoed whole, requests for unopened documents kept; a process id that cannot
be one. Each test is built from a reproduction of the second independent attack (issue
"Reliability round 2"), against the real server (stdio or TCP) with the tiny model.

Work that used to grow quadratically is checked at sizes where quadratic work would run
far past pytest's timeout; nothing here asserts a duration.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time

import pytest
from rawlsp import RawServer, frame, read_message, start_tcp

from speclsp.lsp.config import Config, parse_options
from speclsp.lsp.job import word_before
from speclsp.lsp.session import Session
from speclsp.lsp.state import ServerState


def ready_count(s: RawServer) -> int:
    return sum(1 for m in s.received("speclsp/status") if m["params"]["state"] == "ready")


def test_closing_a_document_named_model_never_cancels_the_model_load(tiny_model_dir, tmp_path):
    """Repro: an invoked completion runs, then one write carries a configuration change to
    another model and a didClose of a document whose URI is `model`. The load used the key
    "model" and the close cancelled it: the model stayed "loading" forever."""
    from speclsp.local import tiny

    other = tiny.build(tmp_path / "other-model")
    s = RawServer(str(tiny_model_dir), tmp_path / "server.log", "-v")
    try:
        s.initialize(tmp_path, {"maxTokens": 1024, "deadlineMs": 0})
        uri = (tmp_path / "a.py").as_uri()
        s.open(uri, "def f(x):\n    return x\n" * 130)
        s.open("model", "x = 1\n")
        s.send_request(
            "textDocument/inlineCompletion",
            {"textDocument": {"uri": uri}, "position": {"line": 260, "character": 0}, "context": {"triggerKind": 1}},
        )
        time.sleep(0.3)
        s.write(
            frame(
                {
                    "jsonrpc": "2.0",
                    "method": "workspace/didChangeConfiguration",
                    "params": {"settings": {"speclsp": {"model": str(other)}}},
                }
            )
            + frame({"jsonrpc": "2.0", "method": "textDocument/didClose", "params": {"textDocument": {"uri": "model"}}})
        )
        s.wait(
            lambda m: (
                m.get("method") == "speclsp/status"
                and m["params"]["state"] == "ready"
                and m["params"]["model"] == str(other)
            ),
            120,
        )
        assert "result" in s.inline(uri, 3, 0)
    finally:
        s.close()


def test_sending_the_same_model_again_after_a_failed_load_retries_it(tiny_model_dir, tmp_path):
    from speclsp.local import tiny

    later = tmp_path / "later-model"
    s = RawServer(str(later), tmp_path / "server.log", "-v")
    try:
        s.initialize(tmp_path, {}, wait_ready=False)
        s.wait(lambda m: m.get("method") == "speclsp/status" and m["params"]["state"] == "error", 60)
        tiny.build(later)  # the model appears (a download finished, a disk was mounted)
        s.notify("workspace/didChangeConfiguration", {"settings": {"speclsp": {"model": str(later)}}})
        s.wait(lambda m: m.get("method") == "speclsp/status" and m["params"]["state"] == "ready", 60)
    finally:
        s.close()


def test_the_word_before_the_cursor_is_found_in_linear_time():
    line = "a" * 1_000_000 + " = mul"  # `\w+$` searched this in quadratic time
    assert word_before(line, len(line)) == "mul"
    assert word_before("x" * 1_000_000, 1_000_000) == "x" * 1_000_000
    assert word_before("foo(bar_1", 9) == "bar_1" and word_before("foo(", 4) == ""


def test_a_completion_at_the_end_of_a_100k_character_line_is_answered(tiny_model_dir, tmp_path):
    s = RawServer(str(tiny_model_dir), tmp_path / "server.log")
    try:
        s.initialize(tmp_path, {"maxTokens": 4, "lookahead": "fixed:2"})
        uri = (tmp_path / "long.py").as_uri()
        text = "abc_" * 25000 + " = mul"
        s.open(uri, text)
        assert "result" in s.inline(uri, 0, len(text), timeout=120)
        assert "result" in s.request("speclsp/stats", None)
    finally:
        s.close()


def test_accepting_megabytes_at_the_index_cap_keeps_history_bounded(tiny_model_dir, tmp_path):
    """Repro: speclsp/didAccept with 1 MB that repeats every 26 characters, at the index's
    token cap, took minutes per accept. An accepted completion is kept up to 8k characters."""
    s = RawServer(str(tiny_model_dir), tmp_path / "server.log")
    try:
        s.initialize(tmp_path, {"indexMaxTokens": 10_000})
        uri = (tmp_path / "a.py").as_uri()
        s.open(uri, "value = compute(alpha, beta)\n" * 400)  # over the cap by itself
        blob = "abcdefghijklmnopqrstuvwxyz" * 40_000
        for _ in range(3):
            s.notify("speclsp/didAccept", {"uri": uri, "text": blob, "kind": "full"})
        assert "result" in s.request("speclsp/stats", None, timeout=120)
    finally:
        s.close()


def test_huge_option_keys_and_values_are_not_echoed_whole():
    cfg, warnings = parse_options({"maxTokens": "9" * 5_000_000, "k" * 1_000_000: 1})
    assert cfg.max_tokens == Config().max_tokens and len(warnings) == 2
    assert all(len(w) < 1000 for w in warnings)


async def test_requests_for_documents_that_are_not_open_leave_nothing_behind():
    class Channel:
        def status(self, *a):
            pass

        def progress(self, *a):
            pass

        def inline_update(self, *a):
            pass

        def warn(self, *a):
            pass

    state = ServerState(Config(), Channel())
    session = Session(state)
    for i in range(100):
        answer = await session.complete(f"file:///{'x' * 2000}{i}.py", 0, 0, request_id="r" * 1000 + str(i))
        assert answer.reason == "not_open"
    assert state.latest_request == {}
    state.shutdown()


@pytest.mark.parametrize("pid", [-1, 2**40, 0])
def test_a_process_id_that_cannot_be_a_process_is_logged_not_silently_ignored(tiny_model_dir, tmp_path, pid):
    s = RawServer(str(tiny_model_dir), tmp_path / "server.log")
    try:
        r = s.request("initialize", {"processId": pid, "rootUri": None, "capabilities": {}})
        assert "result" in r
        s.notify("initialized", {})
        assert "result" in s.request("speclsp/stats", None)
        assert "is not a process id" in s.log_file.read_text()
    finally:
        s.close()


def test_over_tcp_two_clients_connecting_at_once_never_see_each_others_messages(tmp_path):
    """Repro: both clients connect in the same loop turn (the server is stopped while they
    connect); the second must be refused, not handed the first one's answers."""
    proc, line = start_tcp("127.0.0.1:0", str(tmp_path / "none"))
    try:
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert m, line
        port = int(m.group(1))
        os.kill(proc.pid, signal.SIGSTOP)
        a = socket.create_connection(("127.0.0.1", port), timeout=30)
        b = socket.create_connection(("127.0.0.1", port), timeout=30)
        os.kill(proc.pid, signal.SIGCONT)
        a.sendall(
            frame(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {"processId": None, "rootUri": None, "capabilities": {}},
                }
            )
        )
        assert read_message(a.makefile("rb"))["id"] == 1
        b.settimeout(30)
        assert b.recv(1) == b""  # refused: closed without a byte
        a.sendall(
            frame({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}) + frame({"jsonrpc": "2.0", "method": "exit"})
        )
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
