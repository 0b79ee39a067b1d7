"""End-to-end tests that need a server of their own: cancellation, staleness, superseding,
configuration changes, model loading states, shutdown/exit, and the editor going away.

Slow generations come from `lookahead: fixed:0` (one token per forward) with many tokens
and no answer deadline, so a request is still running when the test interferes with it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import SERVER_ENV, server_command
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled
from rawlsp import read_message

SLOW = {"maxTokens": 1024, "lookahead": "fixed:0", "deadlineMs": 0}


def uri_in(tmp_path, name: str = "a.py") -> str:
    return (tmp_path / name).as_uri()


async def _start_slow_request(ed, uri, msg_id):
    """Send an invoked inline completion and wait until it streams (it is generating then)."""
    params = ed.inline_params(uri, invoked=True)
    fut = asyncio.wrap_future(
        ed.client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id)
    )
    await ed.wait_for(lambda: any(u["requestId"] == msg_id and u["text"] for u in ed.updates))
    return fut


async def _finished(ed, request_id):
    """Stats once the generation started by `request_id` has ended."""
    for _ in range(400):
        stats = await ed.stats()
        if stats["last"] and stats["last"].get("requestId") == request_id:
            return stats
        await asyncio.sleep(0.05)
    raise AssertionError(f"no finished generation for {request_id}: {stats}")


# --- cancellation and staleness ---------------------------------------------------------------


async def test_cancel_request_stops_a_running_completion(start_server, tmp_path):
    async with start_server("vscode", SLOW) as ed:
        uri = uri_in(tmp_path)
        ed.open(uri, "def f(")
        fut = await _start_slow_request(ed, uri, "slow-1")
        ed.client.cancel_request(types.CancelParams(id="slow-1"))
        with pytest.raises(JsonRpcRequestCancelled):
            await asyncio.wait_for(fut, 30)
        stats = await _finished(ed, "slow-1")  # stopped after the grace period, not at 1024 tokens
        assert stats["cancelled"] == 1
        assert stats["last"]["stop_reason"] == "cancelled" and stats["last"]["new_tokens"] < 1024
        ed.configure({"maxTokens": 8})  # and the server carries on
        assert (await ed.inline(uri, invoked=True)).items


async def test_edit_during_generation_drops_the_outdated_answer(start_server, tmp_path):
    async with start_server("vscode", SLOW) as ed:
        uri = uri_in(tmp_path)
        ed.open(uri, "def f(")
        fut = await _start_slow_request(ed, uri, "stale-1")
        ed.insert(uri, "\n# not what was suggested")
        result = await asyncio.wait_for(fut, 30)
        assert result.items == ()  # exactly one answer, and empty
        stats = await _finished(ed, "stale-1")
        assert stats["stale"] == 1 and stats["last"]["stop_reason"] == "cancelled"


async def test_newer_request_for_the_document_supersedes_the_running_one(start_server, tmp_path):
    async with start_server("vscode", SLOW) as ed:
        uri = uri_in(tmp_path)
        ed.open(uri, "x = 1\ndef f(")
        old = await _start_slow_request(ed, uri, "old-1")  # at the end
        ed.configure({"maxTokens": 8})
        newer = await ed.inline(uri, invoked=True, position=types.Position(0, 5))  # the cursor moved up
        assert (await asyncio.wait_for(old, 30)).items == ()
        assert newer.items and newer.items[0].range.end == types.Position(0, 5)
        stats = await ed.stats()
        assert stats["superseded"] >= 1 and stats["modelCalls"] == 2


# --- configuration ----------------------------------------------------------------------------


async def test_configuration_changes_apply_and_bad_values_warn(start_server, tmp_path):
    async with start_server("vscode", {"maxTokens": 0, "colour": "blue"}) as ed:
        await ed.wait_for(lambda: len(ed.client.messages) >= 2)
        warned = " ".join(m.message for m in ed.client.messages)
        assert "'maxTokens'" in warned and "'colour'" in warned
        assert all(m.type == types.MessageType.Warning for m in ed.client.messages)

        uri = uri_in(tmp_path)
        ed.open(uri, "def f(")
        ed.configure({"maxTokens": 5, "lookahead": "sideways"})
        await ed.wait_for(lambda: len(ed.client.messages) >= 3)
        assert "'lookahead'" in ed.client.messages[2].message
        assert (await ed.inline(uri, invoked=True)).items
        assert (await ed.stats())["last"]["new_tokens"] <= 5  # maxTokens applied, the bad lookahead ignored

        ed.configure({"languages": {"python": False}})
        assert (await ed.inline(uri, invoked=True)).items == ()
        ed.configure({"languages": {}, "enabled": False})
        assert (await ed.inline(uri, invoked=True)).items == ()
        assert (await ed.stats())["modelCalls"] == 1
        assert len(ed.client.messages) == 3


# --- model loading ----------------------------------------------------------------------------


async def test_completion_before_the_model_is_ready_is_empty_and_quick(start_server, tmp_path):
    async with start_server("vscode", wait_ready=False) as ed:
        uri = uri_in(tmp_path)
        ed.open(uri, "def f(")
        result = await ed.inline(uri, invoked=True)
        assert result.items == ()
        assert not any(s["state"] == "ready" for s in ed.statuses)  # answered while it loads: no wait
        await ed.wait_ready()
        assert (await ed.inline(uri, invoked=True)).items
    assert "no completion, model loading" in ed.log.read_text()


async def test_unloadable_model_reports_error_and_completes_nothing(start_server, tmp_path):
    async with start_server("neovim", model=str(tmp_path / "no-such-model"), wait_ready=False) as ed:
        await ed.wait_for(lambda: any(s["state"] == "error" for s in ed.statuses))
        await ed.wait_for(lambda: ed.client.messages)
        assert "no-such-model" in ed.client.messages[0].message
        uri = uri_in(tmp_path)
        ed.open(uri, "x = ")
        assert (await ed.inline(uri, invoked=True)).items == ()


# --- shutdown, exit, and the editor going away ------------------------------------------------


async def test_exit_without_shutdown_ends_the_server_with_code_1(start_server):
    async with start_server("neovim", wait_ready=False) as ed:
        ed.client.exit(None)
        await asyncio.wait_for(ed.client._server.wait(), 30)
        assert ed.client._server.returncode == 1
    # (a normal shutdown + exit, ending with code 0, closes every other test's server)


def _frame(msg: dict) -> bytes:
    body = json.dumps(msg).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _start_raw_server(tmp_path, process_id: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        server_command(str(tmp_path / "none")),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=SERVER_ENV,
    )
    proc.stdin.write(
        _frame(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {"processId": process_id, "rootUri": None, "capabilities": {}},
            }
        )
    )
    proc.stdin.flush()
    assert b"Content-Length" in proc.stdout.readline()  # answered
    return proc


def test_server_exits_when_the_client_closes_its_pipe(tmp_path):
    proc = _start_raw_server(tmp_path, os.getpid())
    proc.stdin.close()
    assert proc.wait(timeout=20) == 1


def test_a_client_closing_the_pipe_mid_request_ends_the_server_with_one_line_and_no_traceback(tiny_model_dir, tmp_path):
    log_file = tmp_path / "server.log"
    proc = subprocess.Popen(
        server_command(str(tiny_model_dir), "--dtype", "float32", "--log-file", str(log_file), "-v"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=SERVER_ENV,
    )

    def send(msg: dict) -> None:
        proc.stdin.write(_frame(msg))
        proc.stdin.flush()

    send(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "processId": None,
                "rootUri": None,
                "capabilities": {},
                "initializationOptions": {"maxTokens": 512, "lookahead": "fixed:2", "deadlineMs": 0},
            },
        }
    )
    send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
    while read_message(proc.stdout).get("params", {}).get("state") != "ready":  # status after loading
        pass
    text = "def f(x):\n    return x\n" * 40
    for i in range(4):
        uri = f"file:///w/doc{i}.py"
        send(
            {
                "jsonrpc": "2.0",
                "method": "textDocument/didOpen",
                "params": {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}},
            }
        )
        send(
            {
                "jsonrpc": "2.0",
                "id": 10 + i,
                "method": "textDocument/inlineCompletion",
                "params": {
                    "textDocument": {"uri": uri},
                    "position": {"line": 80, "character": 0},
                    "context": {"triggerKind": 1},
                },
            }
        )
    proc.stdout.close()  # the editor goes away while those requests run
    time.sleep(1.0)
    proc.stdin.close()
    assert proc.wait(timeout=30) in (0, 1)
    log = log_file.read_text()
    assert "Traceback" not in log and "BrokenPipe" not in log
    assert log.count("the client closed the connection") <= 1


def test_server_exits_when_the_client_process_dies(tmp_path):
    editor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc = _start_raw_server(tmp_path, editor.pid)
    try:
        editor.send_signal(signal.SIGKILL)
        editor.wait()
        assert proc.wait(timeout=20) == 1  # stdin is still open: the parent-process watch did it
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()


async def test_draft_model_option_loads_it_and_completions_stay_lossless(start_server, tiny_model_dir, tiny_lm):
    """`draftModel` (the tiny model drafting for itself) loads beside the model, the hybrid
    drafter is in use, and the suggestion is exactly what greedy decoding gives. (Which
    drafter wins a step is the hybrid's cost decision, tested in test_draft_model.py.)"""
    from speclsp.completion.completer import Completer, CompletionRequest
    from speclsp.local.backend import LocalBackend

    text = "def get_value(self, items):\n    for key in path:\n        key = key + "
    lines = text.split("\n")
    want = (
        Completer(LocalBackend(tiny_lm))
        .complete(CompletionRequest("doc.py", text, len(lines) - 1, len(lines[-1]), max_tokens=24, speculate=False))
        .text
    )
    async with start_server("vscode", {"draftModel": str(tiny_model_dir), "maxTokens": 24}) as ed:
        await ed.wait_ready()
        uri = f"{tmp_path_uri(ed)}/draft.py"
        ed.open(uri, text)
        result = await ed.inline(uri, invoked=True)
        assert result.items[0].insert_text == want
        stats = await ed.stats()
        assert stats["draftModel"] == str(tiny_model_dir) and stats["drafter"] == "hybrid"


def tmp_path_uri(editor) -> str:
    return editor.log.parent.as_uri()
