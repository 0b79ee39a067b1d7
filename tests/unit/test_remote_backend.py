"""The remote backend (speclsp.remote) against a local server that misbehaves on purpose
(tests/support/fakeopenai.py): what it sends, streaming, cutting and cancelling (the
connection is closed), deadlines, HTTP errors, broken streams, unknown models, a server
that is down and comes back (backoff), and the API key (sent to the endpoint, never
logged)."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from fakeopenai import FakeServer
from remotehelpers import KEY, free_port

from speclsp.backend import BackendError, CancelToken
from speclsp.completion.fim import stop_token_strings, token_strings
from speclsp.remote.backend import OpenAIBackend, RemoteSettings, endpoint_host, load_tokenizer
from speclsp.remote.sse import EventReader


@pytest.fixture
def fake():
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tokenizer(trained_model_dir):
    return load_tokenizer(trained_model_dir)


def backend_for(endpoint: str, tokenizer, **kw) -> OpenAIBackend:
    settings = RemoteSettings(endpoint, kw.pop("model", "fake"), **kw)
    return OpenAIBackend(settings, tokenizer, token_strings(), stop_token_strings())


def generate(backend: OpenAIBackend, **kw):
    kw.setdefault("max_new_tokens", 32)
    return backend.generate(backend.encode("class Shape:\n    def area(self):\n        "), **kw)


def test_event_reader_joins_data_lines_and_skips_comments():
    r = EventReader()
    assert [r.feed(x) for x in (": keep-alive", "", "event: x", "data: a", "data:b", "id: 1", "")] == [
        None,
        None,
        None,
        None,
        None,
        None,
        "a\nb",
    ]
    assert r.feed("data: half") is None and r.pending()


def test_tokenizer_from_files_matches_the_local_model(trained_lm, tokenizer):
    text = "def area(self):\n    return self.width * self.height  # é, 中文\n"
    assert tokenizer.encode(text, add_special_tokens=False).ids == trained_lm.encode(text)


def test_streams_text_and_sends_what_the_server_needs(fake, tokenizer):
    backend = backend_for(fake.endpoint, tokenizer)
    backend.probe()
    seen: list[str] = []
    result = generate(backend, on_text=seen.append, stop=("\n",))
    assert result.text == "return self.width * self.height\n"  # the stop string is kept
    assert len(seen) > 3 and all(seen[-1].startswith(s) for s in seen)  # grew, as prefixes
    assert result.stats.backend == "openai" and result.stats.endpoint == f"127.0.0.1:{fake.port}"
    assert result.stats.stop_reason == "eos" and result.stats.new_tokens > 0
    body = fake.completions()[-1]
    assert body["prompt"] == backend.encode("class Shape:\n    def area(self):\n        ")
    assert body["temperature"] == 0 and body["stream"] is True and body["max_tokens"] == 32
    assert body["stop"] == ["\n"]
    assert tokenizer.token_to_id("<|endoftext|>") in body["stop_token_ids"]


def test_the_show_rules_cut_closes_the_connection(fake, tokenizer):
    fake.mode = "slow"  # one chunk, then it would go on for ever
    backend = backend_for(fake.endpoint, tokenizer)
    result = returns(lambda: generate(backend, stop_text=lambda text: 2 if text else None))
    assert result.text == "re" and result.stats.stop_reason == "stop_text"
    wait_until(lambda: fake.disconnects == 1)


def returns(call, hang_s: float = 60.0):
    """call() run on a thread; its result. The "slow" server never ends its stream, so a
    generation that does not stop by itself hangs: that fails here (no speed is asserted)."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(call()), daemon=True)
    t.start()
    t.join(hang_s)
    assert out, f"did not return within {hang_s:.0f} s"
    return out[0]


def wait_until(predicate, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_cancel_mid_stream_returns_at_once_and_closes_the_connection(fake, tokenizer):
    fake.mode = "slow"
    backend = backend_for(fake.endpoint, tokenizer)
    cancel = CancelToken()
    threading.Timer(0.3, cancel.cancel).start()
    result = returns(lambda: generate(backend, cancel=cancel))
    assert result.stats.stop_reason == "cancelled"
    wait_until(lambda: fake.disconnects == 1)


def test_a_slow_server_stops_at_the_deadline(fake, tokenizer):
    fake.mode = "slow"
    backend = backend_for(fake.endpoint, tokenizer)
    deadline = time.monotonic() + 0.4
    result = returns(lambda: generate(backend, deadline=deadline))
    assert result.stats.stop_reason == "deadline" and time.monotonic() >= deadline  # not before it
    assert result.text == "retu"


@pytest.mark.parametrize(
    "mode, message, kind",
    [
        ("http500", "answered HTTP 500: engine crashed", "http"),
        ("malformed", "malformed event in the stream", "stream"),
        ("dies", "closed the stream mid-completion", "stream"),
        ("error_event", "out of KV cache", "stream"),
        # Oversized answers are refused unread: one 10 MB stream line, a 10 MB error page.
        ("huge_line", "a stream line over 1048576 bytes", "stream"),
        ("huge_error", "answered HTTP 500", "http"),
        ("busy", "asked to wait 60 s", "busy"),
    ],
)
def test_faults_raise_one_clear_line_of_their_kind(fake, tokenizer, mode, message, kind):
    fake.mode = mode
    backend = backend_for(fake.endpoint, tokenizer)
    with pytest.raises(BackendError, match=message) as err:
        generate(backend, on_text=lambda t: None)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    assert err.value.kind == kind  # what the session tells faults apart by (one popup per kind)


def test_a_malformed_event_is_an_error_not_text(fake, tokenizer):
    backend = backend_for(fake.endpoint, tokenizer)
    from speclsp.remote.backend import _parse_event

    assert _parse_event('{"choices": [{"text": "x"')[0] == "error"
    assert _parse_event('{"choices": [{"text": 5}]}')[0] == "error"
    assert _parse_event("[1, 2]")[0] == "error"
    assert _parse_event('{"choices": [{"text": "ok", "finish_reason": null}]}') == (
        "items",
        [("chunk", ("ok", None, None, None))],
    )
    assert backend.host == f"127.0.0.1:{fake.port}"


def test_an_unknown_model_is_refused_with_the_served_names(fake, tokenizer):
    backend = backend_for(fake.endpoint, tokenizer, model="qwen-7b")
    with pytest.raises(BackendError, match=r"does not serve model 'qwen-7b' \(it serves: fake\)"):
        backend.probe()
    with pytest.raises(BackendError, match="HTTP 404"):  # and if asked anyway
        generate(backend)


def test_no_model_name_takes_the_servers_first(fake, tokenizer):
    backend = backend_for(fake.endpoint, tokenizer, model="")
    backend.probe()
    assert backend.name == "fake" and generate(backend).text


def test_a_server_down_at_start_is_retried_with_backoff(tokenizer):
    port = free_port()
    backend = backend_for(f"http://127.0.0.1:{port}/v1", tokenizer)
    backend.probe()  # does not raise: the server may come up later
    assert "cannot reach" in backend.problem
    with pytest.raises(BackendError, match="next try in") as err:
        generate(backend)  # within the backoff: not even tried
    assert err.value.kind == "unreachable"  # the kind of the fault that started the backoff
    fake = FakeServer().start(port)
    try:
        time.sleep(0.6)  # the first backoff is 0.5 s
        assert generate(backend).text.startswith("return")
        assert backend.problem == ""
        fake.stop()
        with pytest.raises(BackendError, match="cannot reach"):
            generate(backend)
    finally:
        fake.stop()


def test_the_key_goes_to_the_endpoint_and_never_into_logs_or_messages(fake, tokenizer, monkeypatch, caplog):
    monkeypatch.setenv("SPECLSP_TEST_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    backend = backend_for(fake.endpoint, tokenizer, api_key_env="SPECLSP_TEST_KEY")
    backend.probe()
    generate(backend)
    fake.mode = "http500"
    with pytest.raises(BackendError) as err:
        generate(backend)
    assert {r["auth"] for r in fake.requests} == {f"Bearer {KEY}"}
    assert KEY not in caplog.text and KEY not in str(err.value) and KEY not in backend.describe()


def test_endpoint_host_names_no_credentials():
    assert endpoint_host("https://gpu.example.com:8443/v1") == "gpu.example.com:8443"
    with pytest.raises(ValueError, match="apiKeyEnv"):
        backend_for("http://user:pw@h/v1", None)


def test_special_tokens_escapes_and_control_characters_are_never_shown(fake, tokenizer):
    fake.mode = "hostile"
    fake.text = "return 1\x1b[31m red\x00\x07 ok<|fim_middle|>def leaked():<|endoftext|>"
    backend = backend_for(fake.endpoint, tokenizer)
    seen: list[str] = []
    result = generate(backend, on_text=seen.append)
    assert result.text == "return 1 red ok" and result.stats.stop_reason == "eos"
    for text in seen:  # not even the start of a special token while it streams in
        assert "\x1b" not in text and "\x00" not in text and "<|" not in text, text


def test_retry_after_is_honoured(fake, tokenizer):
    fake.mode = "busy"
    backend = backend_for(fake.endpoint, tokenizer)
    with pytest.raises(BackendError, match="HTTP 429.*asked to wait 60 s"):
        generate(backend)
    for _ in range(5):  # the keystrokes that follow: no request before the minute is up
        with pytest.raises(BackendError, match="next try in"):
            generate(backend)
    assert len(fake.completions()) == 1


def test_a_model_list_nested_too_deep_is_a_clear_error(fake, tokenizer):
    fake.mode = "nested"
    backend = backend_for(fake.endpoint, tokenizer)
    with pytest.raises(BackendError, match="did not answer a model list"):
        backend.probe()


@pytest.mark.parametrize("mode", ["models_silent", "models_drip"])
def test_a_model_list_that_never_comes_whole_is_given_up_within_the_probe_bound(fake, tokenizer, mode):
    """Repro: a server that never sent a first byte, or dripped one at a time (each byte
    restarting the read timeout), held the load."""
    fake.mode = mode
    backend = backend_for(fake.endpoint, tokenizer, probe_timeout_s=1.0)
    done = threading.Event()
    threading.Thread(target=lambda: (backend.probe(), done.set()), daemon=True).start()
    assert done.wait(20), "the probe was held"
    assert "models did not answer within 1 s" in backend.problem, backend.problem


def _varied_code(n: int = 4000) -> str:
    """Code with thousands of distinct names: what fills a BPE cache."""
    import random

    rng = random.Random(1)
    return "".join(
        f"def {''.join(rng.choices('abcdefghijklmnopqrstuvwxyz_', k=rng.randint(3, 14)))}(x, y):\n"
        f"    return x * {rng.randint(0, 10**6)} + y\n"
        for _ in range(n)
    )


def test_a_tokenizer_file_loaded_again_unchanged_gives_the_same_tokenizer(trained_model_dir, tmp_path):
    """The soak's server grew ~4 MB a minute: each switch to a remote backend loaded a new
    tokenizer, and a tokenizer that has encoded text leaves its cache in native memory when
    it is dropped. Loaded once, and again only when the file changes."""
    import os
    import shutil

    from speclsp.local import model
    from speclsp.lsp.memory import malloc_in_use

    shutil.copy(trained_model_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    text = _varied_code()
    first = load_tokenizer(tmp_path)
    first.encode(text, add_special_tokens=False)
    before = malloc_in_use()
    same = True
    for _ in range(10):
        again = load_tokenizer(tmp_path)
        again.encode(text, add_special_tokens=False)
        same = same and again is first
        del again
    if before is not None:  # glibc: what ten new tokenizers left behind, ~19 MB
        assert (malloc_in_use()[0] - before[0]) / 2**20 < 5
    assert same
    st = os.stat(tmp_path / "tokenizer.json")
    os.utime(tmp_path / "tokenizer.json", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_tokenizer(tmp_path) is not first  # the file changed: read again

    # The local model's (a transformers tokenizer wrapping the same kind) likewise.
    a = model.load(str(trained_model_dir), device="cpu", dtype="float32", warm_up=False)
    b = model.load(str(trained_model_dir), device="cpu", dtype="float32", warm_up=False)
    assert a.tokenizer is b.tokenizer and a.model is not b.model
