"""End to end with a real engine: vLLM's CPU build serving the tiny trained model (it knows
what each suggestion must be), speclsp's real language server over stdio in front of it.

One vLLM server for the module (scripts/serve-vllm.sh; ~1-2 minutes to start here), stopped
with its whole process group at the module's end. The suggestion equals what vLLM returns
for the same prompt (and what the local engine suggests); streaming grows; a wrong model
name or endpoint is one clear message. Cancelling and killing vLLM mid-stream are in
tests/server/test_vllm_faults.py, with a random-weights model: this one ends its answer (~230
tokens) in ~1.4 s, too soon to tell an abort from a finished generation. Skipped without
vLLM installed (`bash scripts/serve-vllm.sh install`), failed instead under CI=true.
"""

from __future__ import annotations

import httpx
import pytest
from conftest import running_server
from remotehelpers import complete_cli, free_port, inline_text, messages, remote
from trainedcases import AREA, DESCRIBE, MAX_TOKENS
from vllmserver import VllmServer, module_server

pytestmark = pytest.mark.vllm
URI = "file:///w/shapes.py"
# float32: the tiny model's greedy choices are checked at float32 (bf16 could flip a close one).
ARGS = ("--dtype", "float32", "--max-model-len", "2048", "--enforce-eager")


@pytest.fixture(scope="module")
def vllm(trained_model_dir, tmp_path_factory):
    yield from module_server(trained_model_dir, tmp_path_factory, ARGS, "vLLM")


def options(vllm: VllmServer, **more) -> dict:
    return remote(vllm.endpoint, **{"remoteModel": "tiny", "maxTokens": MAX_TOKENS, **more})


def remote_completer(trained_model_dir, vllm: VllmServer):
    from speclsp.completion.completer import Completer
    from speclsp.completion.loader import Choice, load_remote

    return Completer(
        load_remote(Choice(model=str(trained_model_dir), backend="openai", endpoint=vllm.endpoint, remote_model="tiny"))
    )


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
    r = httpx.post(
        f"{vllm.endpoint}/completions",
        timeout=60,
        json={"model": "tiny", "prompt": list(prompt.ids), "max_tokens": MAX_TOKENS, "temperature": 0},
    )
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


async def test_a_wrong_model_name_or_endpoint_is_one_clear_message(vllm, trained_model_dir, tmp_path):
    async with running_server(
        str(trained_model_dir), tmp_path, "vscode", options(vllm, remoteModel="tiny-7b"), wait_ready=False
    ) as editor:
        # The status first, then the message that explains it.
        await editor.wait_for(lambda: any("does not serve model" in m for m in messages(editor)), 30)
        assert any("does not serve model 'tiny-7b' (it serves: tiny)" in m for m in messages(editor))
        assert editor.statuses[-1]["state"] == "error"
        editor.open(URI, AREA[0])
        assert await inline_text(editor) == ""  # and the server still answers
    out = complete_cli(trained_model_dir, f"http://127.0.0.1:{vllm.port}/v2", "--remote-model", "tiny")
    assert out.returncode == 1 and "HTTP 404" in out.stderr and out.stdout == ""
    out = complete_cli(trained_model_dir, f"http://127.0.0.1:{free_port()}/v1", "--remote-model", "tiny")
    assert out.returncode == 1 and "cannot reach" in out.stderr
