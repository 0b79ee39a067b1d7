"""End to end with a real engine: vLLM's CPU build serving the tiny trained model (it knows
what each suggestion must be), speclsp's real language server over stdio in front of it.

One vLLM server per module (scripts/serve-vllm.sh; ~1-2 minutes to start here), stopped by
its process id. The suggestion equals what vLLM returns for the same prompt (and what the
local engine suggests); streaming grows; cancelling aborts the request inside vLLM, from
the backend (vLLM's own token counter stops short), and from the editor ($/cancelRequest
and a keystroke mid-stream: the request is answered as cancelled and no partial text
stays; vLLM's counter is printed, not asserted, as the tiny model can finish first);
vLLM killed while the editor is streamed a suggestion is one message, the streamed text
taken back and the server still answering, and once vLLM is restarted (the same port, once
per module) the editor is served again; killed under the backend, it is an error; a wrong
model name or endpoint is one clear message. The tiny model streams too fast to catch from
the editor, so the tests through the editor reach vLLM through a slow network
(tests/slowproxy.py). Skipped without vLLM installed (`bash scripts/serve-vllm.sh
install`), failed instead under CI=true.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from conftest import running_server
from test_remote_server import complete_cli, inline_text, messages, remote
from test_trained_model import AREA, DESCRIBE, MAX_TOKENS
from slowproxy import SlowProxy
from vllmserver import VllmServer, free_port, need_vllm

from speclsp.backend import BackendError, CancelToken
from speclsp.tools.tiny_trained import CORPUS

pytestmark = pytest.mark.vllm
URI = "file:///w/shapes.py"
# The cursor at the start of Rectangle's body: the model writes the rest of the corpus (~230
# tokens, ~1.4 s in vLLM here) and the show rules keep its first 16 lines (~105 tokens), which
# take ~6 s through the slow proxy: plenty of stream to cancel or break from the editor.
CLASS_BODY = CORPUS[: CORPUS.index("class Rectangle:\n") + len("class Rectangle:\n    ")]
# float32: the tiny model's greedy choices are checked at float32 (bf16 could flip a close one).
ARGS = ("--dtype", "float32", "--max-model-len", "2048", "--enforce-eager")


@pytest.fixture(scope="module")
def vllm(trained_model_dir, tmp_path_factory):
    need_vllm()
    server = VllmServer(trained_model_dir, "tiny", tmp_path_factory.mktemp("vllm") / "vllm.log", ARGS).start()
    print(f"vLLM started in {server.start_s:.0f} s")
    yield server
    server.stop()


def options(vllm: VllmServer, **more) -> dict:
    return remote(vllm.endpoint, **{"remoteModel": "tiny", "maxTokens": MAX_TOKENS, **more})


def remote_completer(trained_model_dir, vllm: VllmServer):
    from speclsp.completion.completer import Completer
    from speclsp.completion.loader import Choice, load_remote

    return Completer(load_remote(Choice(model=str(trained_model_dir), backend="openai", endpoint=vllm.endpoint,
                                        remote_model="tiny")))


def request_at_end(text: str):
    from speclsp.completion.completer import CompletionRequest

    lines = text.split("\n")
    return CompletionRequest("/w/shapes.py", text, len(lines) - 1, len(lines[-1]), max_tokens=MAX_TOKENS)


async def test_the_suggestion_is_what_vllm_returns_for_the_same_prompt(vllm, trained_model_dir, trained_lm, tmp_path):
    async with running_server(str(trained_model_dir), tmp_path, "vscode", options(vllm)) as editor:
        editor.open(URI, AREA[0])
        shown = await inline_text(editor)
    assert shown == AREA[1]  # the corpus' method body: the model was trained to write it
    # vLLM asked directly, without streaming, with the prompt speclsp builds.
    completer = remote_completer(trained_model_dir, vllm)
    prompt, rules = completer.prompt_for(request_at_end(AREA[0]))
    r = httpx.post(f"{vllm.endpoint}/completions", timeout=60, json={
        "model": "tiny", "prompt": list(prompt.ids), "max_tokens": MAX_TOKENS, "temperature": 0})
    assert rules.finalize(r.json()["choices"][0]["text"]) == shown
    # And the local engine (greedy, in process) agrees.
    from speclsp.completion.completer import Completer
    from speclsp.local.backend import LocalBackend

    assert Completer(LocalBackend(trained_lm)).complete(request_at_end(AREA[0])).text == shown


async def test_streaming_grows_to_the_suggestion(vllm, trained_model_dir, tmp_path):
    async with running_server(str(trained_model_dir), tmp_path, "vscode", options(vllm)) as editor:
        editor.open(URI, DESCRIBE[0])
        shown = await inline_text(editor)
        await editor.wait_for(lambda: any(u["done"] for u in editor.updates), 10)
        stats = await editor.stats()
    assert shown == DESCRIBE[1]
    texts = [u["text"] for u in editor.updates]
    assert len(set(texts)) >= 3 and all(shown.startswith(t) for t in texts) and texts[-1] == shown
    assert stats["last"]["backend"] == "openai" and stats["last"]["endpoint"] == f"127.0.0.1:{vllm.port}"


def long_generation(backend, prompt_ids, cancel=None, on_text=None):
    """A generation of the rest of the corpus (~300 tokens, no show rules to end it)."""
    return backend.generate(prompt_ids, max_new_tokens=600, cancel=cancel, on_text=on_text)


def test_cancelling_closes_the_connection_and_vllm_aborts(vllm, trained_model_dir):
    completer = remote_completer(trained_model_dir, vllm)
    prompt, _ = completer.prompt_for(request_at_end(CORPUS[:120]))
    tokens = lambda: vllm.metric("vllm:generation_tokens_total")  # noqa: E731
    before = tokens()
    cancel = CancelToken()
    t0 = time.monotonic()
    result = long_generation(completer.backend, prompt.ids, cancel, on_text=lambda t: cancel.cancel())
    assert result.stats.stop_reason == "cancelled" and time.monotonic() - t0 < 5
    time.sleep(3)  # longer than the whole generation takes: had it not been aborted, it would be done
    assert vllm.metric("vllm:num_requests_running") == 0
    cancelled = tokens() - before
    full = long_generation(completer.backend, prompt.ids)  # the same request, not cancelled
    assert full.stats.new_tokens > 100 and full.stats.stop_reason == "eos"
    # vLLM stopped generating for the cancelled request well before its end (not aborted, it
    # would have written all of it; the abort lands ~0.5 s after the cancel here, at ~170 tokens/s).
    assert cancelled < full.stats.new_tokens - 30, (cancelled, full.stats.new_tokens)


@pytest.fixture
def slow(vllm):
    """A slow network between the language server and vLLM (tests/slowproxy.py)."""
    proxy = SlowProxy(vllm.port).start()
    yield proxy
    proxy.stop()


def through(proxy: SlowProxy, vllm: VllmServer, **more) -> dict:
    """Options for a language server that reaches vLLM through `proxy` and answers only
    when the generation is done (no deadline: the answer is the final word)."""
    return {**options(vllm, **more), "endpoint": proxy.endpoint, "deadlineMs": 0, "maxTokens": 1024}


async def test_cancelling_mid_stream_through_the_server_aborts_the_request_in_vllm(vllm, slow, trained_model_dir,
                                                                                   tmp_path):
    tokens = lambda: vllm.metric("vllm:generation_tokens_total")  # noqa: E731
    async with running_server(str(trained_model_dir), tmp_path, "vscode", through(slow, vllm)) as editor:
        editor.open(URI, CLASS_BODY)
        before = tokens()
        t = editor.t
        pending = asyncio.wrap_future(editor.client.protocol.send_request(
            t.TEXT_DOCUMENT_INLINE_COMPLETION, editor.inline_params(URI, invoked=True), msg_id="typed-over"))
        await editor.wait_for(lambda: any(u["text"] for u in editor.updates), 30)  # it streams to the editor
        # What an editor sends when the user types on: cancel the request, then the keystroke
        # (not what was suggested; $/cancelRequest alone stops the model after a grace period).
        editor.client.protocol.notify(t.CANCEL_REQUEST, t.CancelParams(id="typed-over"))
        editor.insert(URI, "x")
        with pytest.raises(Exception, match="cancel"):
            await asyncio.wait_for(pending, 10)
        await editor.stats()  # the server has handled the cancel and the keystroke: nothing more may come
        seen = len(editor.updates)
        await editor.wait_for(lambda: vllm.metric("vllm:num_requests_running") == 0, 30)
        cancelled = tokens() - before
        late = [u for u in editor.updates[seen:] if u["version"] == 1]
        assert late == [] and not any(u["done"] and u["text"] for u in editor.updates)  # no partial text stays
        streamed = [u["text"] for u in editor.updates if u["text"]]
        assert streamed and all(CORPUS[len(CLASS_BODY):].startswith(s) for s in streamed)
    # The same prompt, not cancelled, straight to vLLM: how much it writes when left alone.
    completer = remote_completer(trained_model_dir, vllm)
    prompt, _ = completer.prompt_for(request_at_end(CLASS_BODY))
    full = long_generation(completer.backend, prompt.ids)
    # Printed, not asserted: the trained model writes its ~230 tokens in vLLM in ~0.8-1.4 s
    # here, and the cancel from the editor lands in vLLM ~0.7 s or more after the request
    # started, so which one wins depends on the load (seen: 111 of 231, and 231 of 231).
    # The abort itself is asserted at the backend level (test_cancelling_closes_...).
    print(f"vLLM wrote {cancelled:.0f} tokens for the cancelled request, {full.stats.new_tokens} uncancelled")
    assert full.stats.new_tokens > 200 and full.stats.stop_reason == "eos" and cancelled <= full.stats.new_tokens


async def test_a_wrong_model_name_or_endpoint_is_one_clear_message(vllm, trained_model_dir, tmp_path):
    async with running_server(str(trained_model_dir), tmp_path, "vscode", options(vllm, remoteModel="tiny-7b"),
                              wait_ready=False) as editor:
        await editor.wait_for(lambda: any(s["state"] == "error" for s in editor.statuses), 30)
        assert any("does not serve model 'tiny-7b' (it serves: tiny)" in m for m in messages(editor))
        editor.open(URI, AREA[0])
        assert await inline_text(editor) == ""  # and the server still answers
    out = complete_cli(trained_model_dir, f"http://127.0.0.1:{vllm.port}/v2", "--remote-model", "tiny")
    assert out.returncode == 1 and "HTTP 404" in out.stderr and out.stdout == ""
    out = complete_cli(trained_model_dir, f"http://127.0.0.1:{free_port()}/v1", "--remote-model", "tiny")
    assert out.returncode == 1 and "cannot reach" in out.stderr


async def test_vllm_killed_while_the_server_streams_then_restarted(vllm, slow, trained_model_dir, tmp_path):
    """vLLM dies under a suggestion the editor is being streamed: one clear message, the
    streamed text taken back, the server goes on serving; restarted (the same port), it
    serves again, to this server and to one started while it was down. Restarts vLLM."""
    async with running_server(str(trained_model_dir), tmp_path, "vscode", through(slow, vllm)) as editor:
        editor.open(URI, CLASS_BODY)
        answer = asyncio.ensure_future(inline_text(editor, timeout=60))
        await editor.wait_for(lambda: any(u["text"] for u in editor.updates), 30)
        vllm.kill()
        assert await answer == ""
        await editor.wait_for(lambda: any(u["done"] for u in editor.updates), 10)
        assert [u for u in editor.updates if u["done"]][-1]["text"] == ""  # what was shown is taken back
        streamed = [u["text"] for u in editor.updates if u["text"]]
        assert streamed and all(CORPUS[len(CLASS_BODY):].startswith(s) for s in streamed)
        await editor.wait_for(lambda: any("mid-completion" in m for m in messages(editor)), 10)
        shown = [m for m in messages(editor) if "mid-completion" in m]
        assert len(shown) == 1 and "\n" not in shown[0] and editor.statuses[-1]["state"] == "error"
        editor.close_all()
        editor.open(URI, AREA[0])
        assert await inline_text(editor) == ""  # vLLM is down: the server answers, with nothing
        second_dir = tmp_path / "second"
        second_dir.mkdir()
        async with running_server(str(trained_model_dir), second_dir, "vscode", options(vllm)) as second:
            await second.wait_for(lambda: any("cannot reach" in m for m in messages(second)), 10)
            second.open(URI, AREA[0])
            assert await inline_text(second) == ""  # no server: no suggestion, at once
            vllm.start()  # the same port
            print(f"vLLM restarted in {vllm.start_s:.0f} s")
            for ed in (editor, second):
                text, end = "", time.monotonic() + 60
                while text != AREA[1] and time.monotonic() < end:
                    text = await inline_text(ed)
                    if text != AREA[1]:
                        await asyncio.sleep(0.5)  # a backoff may still run: ask again
                assert text == AREA[1]
                assert ed.statuses[-1]["state"] == "ready"


def test_vllm_killed_mid_stream_is_a_backend_error(vllm, trained_model_dir):
    """Last in the module: it leaves vLLM down."""
    completer = remote_completer(trained_model_dir, vllm)
    prompt, _ = completer.prompt_for(request_at_end(CORPUS[:120]))
    seen: list[str] = []

    def kill_on_first_text(text: str) -> None:
        if not seen:
            threading.Thread(target=vllm.kill).start()
        seen.append(text)

    with pytest.raises(BackendError, match="mid-completion") as err:
        long_generation(completer.backend, prompt.ids, on_text=kill_on_first_text)
    assert "\n" not in str(err.value) and seen
