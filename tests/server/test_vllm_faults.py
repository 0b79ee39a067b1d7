"""Faults with a real engine: vLLM's CPU build serving a tiny *random-weights* model, so that
a cancel or a kill lands while vLLM is still generating, every time.

The trained model of tests/server/test_vllm_e2e.py ends its answer (~230 tokens) in ~1.4 s,
about as long as a cancel takes to reach vLLM, so a test could not tell an abort from a
finished generation. This model's greedy answer never ends (a short pattern repeated, no
end token): asked for `MAX_TOKENS` (1,024, the language server's largest maxTokens) it
writes exactly that many, in ~13 s here (`HIDDEN`). The cancel or the kill comes at the
first streamed text, so vLLM's generation-token counter (its /metrics) tells for certain
whether the request was aborted: the same request left alone writes the maximum.

Tested: a cancel from the backend and one from the editor ($/cancelRequest and a keystroke
mid-stream, through the language server over stdio) make vLLM stop generating well before
the maximum, and nothing more is generated afterwards (the counter grows by exactly what
the next request writes); the editor's request is answered as cancelled and no partial
text stays. vLLM killed while the editor is streamed a suggestion is one one-line message,
the streamed text taken back, the server still answering; a second server started while
vLLM is down says it cannot reach it; restarted on the same port, vLLM serves both again.
Killed under the backend, it is a `BackendError` (last: it leaves vLLM down).

The cancel from the editor reaches vLLM through tests/support/slowproxy.py (a slow network:
the editor is still being streamed when it lands); the kill from the editor goes straight
to vLLM, so that the stream cut off shows vLLM died while generating. One vLLM server for
the module (its own, not test_vllm_e2e.py's: module-scoped fixtures end with their module,
and `VllmServer.stop` returns only when its whole process group is gone, so the two never
run at once). Skipped without vLLM installed (`bash scripts/serve-vllm.sh install`), failed
instead under CI=true.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from conftest import running_server
from remotehelpers import inline_text, messages, remote
from slowproxy import SlowProxy
from vllmserver import VllmServer, module_server

from speclsp.backend import BackendError, CancelToken
from speclsp.tools.tiny_trained import CORPUS

pytestmark = pytest.mark.vllm
URI = "file:///w/shapes.py"
DOC = CORPUS[:120]  # the random model's first text comes at once for this prompt (~70 tokens)
MAX_TOKENS = 1024  # the language server's largest maxTokens
# Wide layers (hidden 1,536, 4 layers, ~115 M random parameters): 1,024 tokens take ~13 s in
# vLLM here, and each forward is a few large matrix products. A CI run with hidden 512 saw
# every answer written whole before its first streamed text arrived (all four cancel and
# kill tests wrote 1,024 of 1,024), and two CPU-bound processes beside the test reproduce it
# (first text after 10.8 s of a 10.1 s generation; also with 16 layers of 512, and with a
# core reserved from vLLM's threads). Our reading: with small layers vLLM's engine is mostly
# Python, and its output thread gets the interpreter lock only when the generation ends.
# With large ones it streams at once: first text after 0.13-0.18 s under the same load, and
# every test of the module passed.
LAYERS = 4
HIDDEN = 1536
# float32 and eager as the trained model's server; the prompt (~70 tokens) plus MAX_TOKENS
# fit in 2,048 positions (the model has 4,096).
ARGS = ("--dtype", "float32", "--max-model-len", "2048", "--enforce-eager")


@pytest.fixture(scope="module")
def random_model_dir(tmp_path_factory):
    """A random model from speclsp.local.tiny, larger than `tiny_model_dir`'s: vLLM's CPU
    attention needs a head size of at least 32 (the default 64 / 4 heads = 16 fails at the
    first request: "Unsupported CPU attention configuration: head_dim=16"), and at hidden
    size `HIDDEN` a token takes long enough in vLLM (~13 ms here, ~13 s for 1,024) to leave
    the editor's cancel or kill seconds to land, and vLLM streams while it generates (see
    `HIDDEN`). Random weights, built in seconds."""
    from speclsp.local import tiny

    return tiny.build(tmp_path_factory.mktemp("random-model"), hidden=HIDDEN, layers=LAYERS, heads=HIDDEN // 128)


@pytest.fixture(scope="module")
def vllm(random_model_dir, tmp_path_factory):
    yield from module_server(random_model_dir, tmp_path_factory, ARGS, "vLLM (random model)")


def completer_for(model_dir, vllm: VllmServer):
    from speclsp.completion.completer import Completer
    from speclsp.completion.loader import Choice, load_remote

    return Completer(
        load_remote(Choice(model=str(model_dir), backend="openai", endpoint=vllm.endpoint, remote_model="tiny"))
    )


def prompt_ids(completer, text: str = DOC) -> list[int]:
    from speclsp.completion.completer import CompletionRequest

    lines = text.split("\n")
    prompt, _ = completer.prompt_for(CompletionRequest("/w/shapes.py", text, len(lines) - 1, len(lines[-1])))
    return list(prompt.ids)


def tokens(vllm: VllmServer) -> float:
    return vllm.metric("vllm:generation_tokens_total")


def wait_idle(vllm: VllmServer, timeout: float = 60) -> None:
    """Until vLLM runs no request (polled; fails after `timeout`)."""
    end = time.monotonic() + timeout
    while vllm.metric("vllm:num_requests_running") != 0:
        assert time.monotonic() < end, "vLLM still runs a request"
        time.sleep(0.1)


def assert_nothing_more_generated(vllm: VllmServer, backend, ids: list[int]) -> None:
    """The counter grows by exactly what one more request writes: the aborted request does
    not go on generating in the background."""
    before = tokens(vllm)
    result = backend.generate(ids, max_new_tokens=8)
    assert result.stats.new_tokens == 8 and result.stats.stop_reason == "max_tokens"
    wait_idle(vllm)
    assert tokens(vllm) - before == 8


def test_the_random_model_writes_until_the_maximum(vllm, random_model_dir):
    """What the other tests rely on: left alone, a request runs to its maximum."""
    completer = completer_for(random_model_dir, vllm)
    before = tokens(vllm)
    full = completer.backend.generate(prompt_ids(completer), max_new_tokens=MAX_TOKENS)
    wait_idle(vllm)
    assert full.stats.new_tokens == MAX_TOKENS and full.stats.stop_reason == "max_tokens"
    assert tokens(vllm) - before == MAX_TOKENS
    print(f"vLLM wrote {MAX_TOKENS} tokens in {full.stats.total_ms / 1e3:.1f} s")


def test_cancelling_closes_the_connection_and_vllm_aborts(vllm, random_model_dir):
    completer = completer_for(random_model_dir, vllm)
    ids = prompt_ids(completer)
    before = tokens(vllm)
    cancel = CancelToken()
    t0, first = time.monotonic(), []

    def on_text(_text):
        first.append(time.monotonic() - t0)
        cancel.cancel()

    result = completer.backend.generate(ids, max_new_tokens=MAX_TOKENS, cancel=cancel, on_text=on_text)
    print(f"first text after {first[0]:.2f} s, generate returned after {time.monotonic() - t0:.2f} s")
    assert result.stats.stop_reason == "cancelled"
    wait_idle(vllm)  # the request left vLLM: aborted (or done, which the count rules out)
    cancelled = tokens(vllm) - before
    print(f"vLLM wrote {cancelled:.0f} of {MAX_TOKENS} tokens for the cancelled request")
    # Fewer than the control's exact MAX_TOKENS: vLLM stopped. Not a tighter bound: on a busy CI
    # machine the cancel took ~8 s to land once (816 of 1,024), against 18-267 tokens here.
    assert 0 < cancelled < MAX_TOKENS, cancelled
    assert_nothing_more_generated(vllm, completer.backend, ids)


@pytest.fixture
def slow(vllm):
    """A slow network between the language server and vLLM (tests/support/slowproxy.py)."""
    proxy = SlowProxy(vllm.port).start()
    yield proxy
    proxy.stop()


def through(proxy: SlowProxy, vllm: VllmServer) -> dict:
    """Options for a language server that reaches vLLM through `proxy`, asks for the most
    tokens it may, and answers only when the generation is done (no deadline)."""
    return {**remote(proxy.endpoint, remoteModel="tiny"), "deadlineMs": 0, "maxTokens": MAX_TOKENS}


async def test_cancelling_mid_stream_through_the_server_aborts_the_request_in_vllm(
    vllm, slow, random_model_dir, tmp_path
):
    async with running_server(str(random_model_dir), tmp_path, "vscode", through(slow, vllm)) as editor:
        editor.open(URI, DOC)
        before = tokens(vllm)
        t = editor.t
        pending = asyncio.wrap_future(
            editor.client.protocol.send_request(
                t.TEXT_DOCUMENT_INLINE_COMPLETION, editor.inline_params(URI, invoked=True), msg_id="typed-over"
            )
        )
        t0 = time.monotonic()
        await editor.wait_for(lambda: any(u["text"] for u in editor.updates), 60)  # it streams to the editor
        print(f"first text after {time.monotonic() - t0:.2f} s ({len(editor.updates)} updates)")
        # What an editor sends when the user types on: cancel the request, then the keystroke
        # (not what was suggested; $/cancelRequest alone stops the model after a grace period).
        editor.client.protocol.notify(t.CANCEL_REQUEST, t.CancelParams(id="typed-over"))
        editor.insert(URI, "x")
        with pytest.raises(Exception, match="cancel"):
            await asyncio.wait_for(pending, 30)
        await editor.stats()  # the server has handled the cancel and the keystroke: nothing more may come
        seen = len(editor.updates)
        await asyncio.to_thread(wait_idle, vllm)
        cancelled = tokens(vllm) - before
        # No partial text stays: once the server has the keystroke, nothing more comes for the
        # version the request was made at (editors drop updates for another version). A last
        # update with text may come before it: under load the generation can end (its 10 s cap,
        # or the cancel's grace period running out) before the keystroke is read; CI saw one.
        late = [u for u in editor.updates[seen:] if u["version"] == 1]
        assert late == [] and all(u["version"] == 1 for u in editor.updates), editor.updates
        streamed = [u["text"] for u in editor.updates if u["text"]]
        assert streamed and all(streamed[-1].startswith(s) for s in streamed)
    print(f"vLLM wrote {cancelled:.0f} of {MAX_TOKENS} tokens for the request cancelled from the editor")
    # Left alone it writes all of them (test_the_random_model_writes_until_the_maximum).
    # Fewer than the control's exact MAX_TOKENS: vLLM stopped. Not a tighter bound: on a busy CI
    # machine the cancel took ~8 s to land once (816 of 1,024), against 18-267 tokens here.
    assert 0 < cancelled < MAX_TOKENS, cancelled
    completer = completer_for(random_model_dir, vllm)
    await asyncio.to_thread(assert_nothing_more_generated, vllm, completer.backend, prompt_ids(completer))


async def test_vllm_killed_while_the_server_streams_then_restarted(vllm, random_model_dir, tmp_path):
    """vLLM dies under a suggestion the editor is being streamed: one clear message, the
    streamed text taken back, the server goes on serving; restarted (the same port), it
    serves again, to this server and to one started while it was down. Restarts vLLM.
    Straight to vLLM, no slow proxy: the stream cut off mid-completion then shows that vLLM
    died while generating (through the proxy it would also be cut after vLLM's end)."""
    options = {**remote(vllm.endpoint, remoteModel="tiny"), "deadlineMs": 0, "maxTokens": MAX_TOKENS}
    async with running_server(str(random_model_dir), tmp_path, "vscode", options) as editor:
        editor.open(URI, DOC)
        answer = asyncio.ensure_future(inline_text(editor, timeout=120))
        await editor.wait_for(lambda: any(u["text"] for u in editor.updates), 60)
        await asyncio.to_thread(vllm.kill)
        assert await answer == ""
        await editor.wait_for(lambda: any(u["done"] for u in editor.updates), 30)
        assert [u for u in editor.updates if u["done"]][-1]["text"] == ""  # what was shown is taken back
        streamed = [u["text"] for u in editor.updates if u["text"]]
        assert streamed and all(streamed[-1].startswith(s) for s in streamed)
        await editor.wait_for(lambda: any("mid-completion" in m for m in messages(editor)), 30)
        shown = [m for m in messages(editor) if "mid-completion" in m]
        assert len(shown) == 1 and "\n" not in shown[0] and editor.statuses[-1]["state"] == "error"
        editor.close_all()
        editor.open(URI, DOC)
        assert await inline_text(editor) == ""  # vLLM is down: the server answers, with nothing
        # Short suggestions from here on: the point is that they come at all.
        short = {**options, "maxTokens": 32}
        editor.configure({"maxTokens": 32})
        second_dir = tmp_path / "second"
        second_dir.mkdir()
        async with running_server(str(random_model_dir), second_dir, "vscode", short) as second:
            await second.wait_for(lambda: any("cannot reach" in m for m in messages(second)), 30)
            second.open(URI, DOC)
            assert await inline_text(second) == ""  # no server: no suggestion, at once
            await asyncio.to_thread(vllm.start)  # the same port
            print(f"vLLM restarted in {vllm.start_s:.0f} s")
            for ed in (editor, second):
                text, end = "", time.monotonic() + 120
                while not text and time.monotonic() < end:
                    text = await inline_text(ed, timeout=120)
                    if not text:
                        await asyncio.sleep(0.5)  # a backoff may still run: ask again
                assert text  # the model's answer (32 tokens of it)
                assert ed.statuses[-1]["state"] == "ready"


def test_vllm_killed_mid_stream_is_a_backend_error(vllm, random_model_dir):
    """Last in the module: it leaves vLLM down."""
    completer = completer_for(random_model_dir, vllm)
    seen: list[str] = []

    def kill_on_first_text(text: str) -> None:
        if not seen:
            threading.Thread(target=vllm.kill).start()
        seen.append(text)

    with pytest.raises(BackendError, match="mid-completion") as err:
        completer.backend.generate(prompt_ids(completer), max_new_tokens=MAX_TOKENS, on_text=kill_on_first_text)
    assert "\n" not in str(err.value) and seen
