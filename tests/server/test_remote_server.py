"""The real language server (and `speclsp complete`) with the remote backend, against a local
server that misbehaves on purpose (tests/support/fakeopenai.py): the suggestion is what the
server streamed, cut by the show rules; faults reach the editor as one clear message, the
language server keeps serving, comes back when the server does, and never leaves partial
text behind; cancelling closes the connection; the API key reaches the endpoint only."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time

import conftest
import pytest
from conftest import running_server
from fakeopenai import FakeServer
from remotehelpers import KEY, URI, complete_cli, free_port, inline_text, messages, remote
from trainedcases import AREA

EXPECTED = "return self.width * self.height"


@pytest.fixture
def fake():
    server = FakeServer(text=EXPECTED + "\n\n").start()
    yield server
    server.stop()


async def test_the_suggestion_is_what_the_server_streamed(fake, trained_model_dir, tmp_path):
    async with running_server(str(trained_model_dir), tmp_path, "vscode", remote(fake.endpoint)) as editor:
        editor.open(URI, AREA[0])
        assert await inline_text(editor) == EXPECTED
        texts = [u["text"] for u in editor.updates if u["text"]]
        assert len(texts) > 3 and all(EXPECTED.startswith(t) for t in texts)  # it grew, as prefixes
        stats = await editor.stats()
        assert stats["last"]["backend"] == "openai" and stats["last"]["endpoint"] == f"127.0.0.1:{fake.port}"
        # The next keystroke's prompt starts with the previous one: the server's prefix cache hits.
        editor.insert(URI, "x")  # not what was suggested: a new request
        await inline_text(editor)
        first, second = (b["prompt"] for b in fake.completions()[-2:])
        common = next((i for i, (a, b) in enumerate(zip(first, second)) if a != b), len(first))
        assert common >= len(first) - 4 and len(first) > 40  # all but the last word and the FIM markers
    # The prompt is the in-process pipeline's, token for token.
    from speclsp.completion.completer import Completer, CompletionRequest
    from speclsp.completion.loader import Choice, load_remote

    completer = Completer(
        load_remote(Choice(model=str(trained_model_dir), backend="openai", endpoint=fake.endpoint, remote_model="fake"))
    )
    lines = AREA[0].split("\n")
    prompt, _ = completer.prompt_for(CompletionRequest("/w/shapes.py", AREA[0], len(lines) - 1, len(lines[-1])))
    assert list(prompt.ids) == first


async def test_a_server_down_at_start_is_said_and_used_once_it_is_up(trained_model_dir, tmp_path):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/v1"
    async with running_server(str(trained_model_dir), tmp_path, "vscode", remote(endpoint)) as editor:
        await editor.wait_for(lambda: any("cannot reach" in m for m in messages(editor)), 10)
        editor.open(URI, AREA[0])
        assert await inline_text(editor) == ""  # empty, and said (above): not a silent wait
        fake = FakeServer(text=EXPECTED + "\n\n").start(port)
        try:
            end = time.monotonic() + 20
            text = ""
            while not text and time.monotonic() < end:  # the backoff ends, the server is asked again
                await asyncio.sleep(0.5)
                text = await inline_text(editor)
            assert text == EXPECTED
            assert editor.statuses[-1]["state"] == "ready"
        finally:
            fake.stop()


async def test_http_errors_are_shown_once_and_serving_goes_on(fake, trained_model_dir, tmp_path):
    async with running_server(str(trained_model_dir), tmp_path, "vscode", remote(fake.endpoint)) as editor:
        editor.open(URI, AREA[0])
        fake.mode = "http500"
        assert await inline_text(editor) == ""
        editor.insert(URI, " ")
        assert await inline_text(editor) == ""
        shown = [m for m in messages(editor) if "HTTP 500" in m]
        assert len(shown) == 1 and "engine crashed" in shown[0] and "\n" not in shown[0]
        assert editor.statuses[-1]["state"] == "error"
        fake.mode = "ok"
        editor.insert(URI, "x")
        assert await inline_text(editor) == "x" + EXPECTED  # the item replaces the word typed
        assert editor.statuses[-1]["state"] == "ready"


@pytest.mark.parametrize("mode", ["dies", "malformed", "error_event"])
async def test_a_broken_stream_leaves_no_partial_text(fake, trained_model_dir, tmp_path, mode):
    fake.mode = mode
    async with running_server(str(trained_model_dir), tmp_path, "vscode", remote(fake.endpoint)) as editor:
        editor.open(URI, AREA[0])
        assert await inline_text(editor) == ""
        await editor.wait_for(lambda: any(u["done"] for u in editor.updates), 10)
        final = [u for u in editor.updates if u["done"]][-1]
        assert final["text"] == ""  # a streaming editor takes back what it showed
        assert all(EXPECTED.startswith(u["text"]) for u in editor.updates)  # never anything else
        assert editor.statuses[-1]["state"] == "error"
        fake.mode = "ok"
        editor.insert(URI, "x")
        assert await inline_text(editor) == "x" + EXPECTED  # and it serves again


async def test_a_new_keystroke_cancels_and_closes_the_connection(fake, trained_model_dir, tmp_path):
    fake.mode = "slow"  # one chunk, then nothing but keep-alives
    options = remote(fake.endpoint, deadlineMs=300)
    async with running_server(str(trained_model_dir), tmp_path, "vscode", options) as editor:
        editor.open(URI, AREA[0])
        assert await inline_text(editor) == "retu"  # answered at the deadline, still generating
        editor.insert(URI, "x")  # the user types something else: the generation is left behind
        fake.mode = "ok"
        await inline_text(editor)
        await editor.wait_for(lambda: fake.disconnects == 1, 5)


async def test_the_api_key_is_sent_to_the_endpoint_and_never_logged(fake, trained_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(conftest.SERVER_ENV, "SPECLSP_TEST_KEY", KEY)
    options = remote(fake.endpoint, apiKeyEnv="SPECLSP_TEST_KEY")
    async with running_server(str(trained_model_dir), tmp_path, "vscode", options) as editor:
        editor.open(URI, AREA[0])
        assert await inline_text(editor) == EXPECTED
        fake.mode = "http500"
        editor.insert(URI, " ")
        await inline_text(editor)
        editor.configure({"apiKeyEnv": KEY})  # a key pasted where its variable's name goes
        await editor.wait_for(lambda: any("apiKeyEnv" in m for m in messages(editor)), 10)
    assert {r["auth"] for r in fake.requests} == {f"Bearer {KEY}"}
    assert KEY not in editor.log.read_text() and "Bearer" not in editor.log.read_text()
    assert not any(KEY in m for m in messages(editor))


def test_cli_complete_says_backend_and_host(fake, trained_model_dir):
    import json

    out = complete_cli(trained_model_dir, fake.endpoint, "--remote-model", "fake", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["text"] == EXPECTED
    assert result["stats"]["backend"] == "openai" and result["stats"]["endpoint"] == f"127.0.0.1:{fake.port}"


def test_cli_complete_with_an_unreachable_endpoint_exits_1_with_one_line(trained_model_dir):
    out = complete_cli(trained_model_dir, f"http://127.0.0.1:{free_port()}/v1", "--json")
    assert out.returncode == 1 and out.stdout == ""
    errors = [line for line in out.stderr.splitlines() if "error" in line]
    assert errors == [errors[0]] and "cannot reach" in errors[0]


def test_cli_complete_with_an_unknown_model_exits_1(fake, trained_model_dir):
    out = complete_cli(trained_model_dir, fake.endpoint, "--remote-model", "nope")
    assert out.returncode == 1 and "does not serve model 'nope'" in out.stderr


def test_bench_remote_puts_the_local_engine_and_the_server_side_by_side(fake, tiny_model_dir, tmp_path):
    import json

    out = tmp_path / "report"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "speclsp",
            "bench",
            "--quick",
            "--backend",
            "openai",
            "--endpoint",
            fake.endpoint,
            "--remote-model",
            "fake",
            "--model",
            str(tiny_model_dir),
            "--dtype",
            "float32",
            "--chars",
            "12",
            "--cps",
            "20",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=conftest.SERVER_ENV,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "remote.json").read_text())
    remote_name = f"openai 127.0.0.1:{fake.port} (fake)"
    assert list(report["rows"]) == ["local greedy", "local ws:auto", "local ws:tree", remote_name]
    assert all(row["text"] == EXPECTED for row in report["rows"][remote_name])
    assert set(report["typing"]) == {"local ws:auto", remote_name}
    assert report["typing"][remote_name]["requests"] > 0
    assert "| system | TTFT p50 ms | decode tok/s p50 |" in r.stdout and remote_name in r.stdout
    # The remote typing replay really went to the server.
    assert len(fake.completions()) > len(report["cases"])


async def _remote_loops(editor, expected: int) -> int:
    """The remote backends alive: each runs its event loop on a thread named speclsp-remote, and
    closing it ends that thread (it takes a moment, so wait for the count up to 30 s)."""
    count = -1
    for _ in range(60):
        count = dict((await editor.stats())["threadNames"]).get("speclsp-remote", 0)
        if count <= expected:
            break
        await asyncio.sleep(0.5)
    return count


async def test_a_reload_closes_the_remote_backend_it_replaces(fake, trained_model_dir, tmp_path):
    """Each reload left the old backend's thread, event loop and HTTP client behind."""
    async with running_server(str(trained_model_dir), tmp_path, "vscode", remote(fake.endpoint)) as editor:
        editor.open(URI, AREA[0])
        assert await inline_text(editor) == EXPECTED
        for n in range(6):  # another configuration each time: a reload
            ready = len([s for s in editor.statuses if s["state"] == "ready"])
            editor.configure(remote(fake.endpoint, maxTokens=40 + n, remoteModel="fake", apiKeyEnv=f"KEY_{n}"))
            await editor.wait_for(lambda: len([s for s in editor.statuses if s["state"] == "ready"]) > ready, 60)
        text = await inline_text(editor)
        assert text and EXPECTED.startswith(text)  # the last backend serves
        assert await _remote_loops(editor, 1) == 1  # the five it replaced are closed


async def test_a_remote_backend_overtaken_by_a_newer_configuration_or_refused_is_closed(
    fake, trained_model_dir, tmp_path
):
    """The two-hour soak: a thread more every few minutes, each holding an event loop, an HTTP
    client and a tokenizer. A remote backend still loading when the next configuration came
    was dropped without being closed, and so was one whose model check failed."""
    async with running_server(str(trained_model_dir), tmp_path, "vscode", {"maxTokens": 8}) as editor:
        editor.open(URI, AREA[0])
        await editor.wait_ready()

        async def back_to_local() -> None:
            ready = len([s for s in editor.statuses if s["state"] == "ready"])
            editor.configure({"backend": "local", "maxTokens": 8})
            await editor.wait_for(lambda: len([s for s in editor.statuses if s["state"] == "ready"]) > ready, 120)

        for n in range(3):
            fake.mode = "models_silent"  # the model check takes its whole timeout: still loading when...
            editor.configure(remote(fake.endpoint, maxTokens=10 + n))
            await back_to_local()  # ...the editor switches back
            fake.mode = "nested"  # a model list that cannot be read: the load fails
            errors = len([s for s in editor.statuses if s["state"] == "error"])
            editor.configure(remote(fake.endpoint, maxTokens=20 + n))
            await editor.wait_for(lambda: len([s for s in editor.statuses if s["state"] == "error"]) > errors, 60)
            await back_to_local()
        assert await _remote_loops(editor, 0) == 0  # six remote backends made, none serving, all closed


async def test_a_backend_replaced_while_the_worker_is_busy_is_closed_by_the_load_that_runs(
    fake, trained_model_dir, tmp_path, monkeypatch
):
    """The soak again, after the fix above: the backend a reload replaced was closed by that
    reload's own load job. When the model worker was busy (a suggestion streaming) and
    another configuration came before the job started, the job was dropped unstarted and
    the replaced backend was never closed."""
    monkeypatch.setitem(conftest.SERVER_ENV, "SPECLSP_TEST_STEP_DELAY_S", "1.5")  # each streamed piece held so long
    fake.text = "value" * 400
    async with running_server(str(trained_model_dir), tmp_path, "vscode", remote(fake.endpoint)) as editor:
        editor.open(URI, AREA[0])
        for n in range(3):
            editor.insert(URI, "#")  # a new request each round (not what was suggested: no cache)
            posts = len(fake.completions())
            pending = asyncio.ensure_future(editor.inline(URI, invoked=True, timeout=60))
            await editor.wait_for(lambda: len(fake.completions()) > posts, 30)  # the worker is streaming...
            ready = len([s for s in editor.statuses if s["state"] == "ready"])
            editor.configure({"backend": "local", "maxTokens": 8})  # ...while two configurations come
            editor.configure(remote(fake.endpoint, maxTokens=30 + n))
            await editor.wait_for(lambda: len([s for s in editor.statuses if s["state"] == "ready"]) > ready, 60)
            with contextlib.suppress(Exception):
                await pending
        assert await _remote_loops(editor, 1) == 1  # four made, the last serves, three closed
