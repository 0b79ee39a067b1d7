"""Property: no document can break another document's completions, nor its own.

One real server over stdio (the tiny model). For any text, arbitrary Unicode with lone
surrogates (sent as JSON escapes, as a client's JSON would carry them), NUL, CR, line
and paragraph separators, opened as one document and typed into another: completions in
a clean document and in the fuzzed one keep coming back as answers, the server counts no
error, and it keeps serving. (Round 3 found one lone surrogate in one document emptying
the completions of every document whose prompt took a snippet of it.)
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawlsp import RawServer

CLEAN = "def area(self):\n    return self.width * self.height\n" * 3 + "def "
SHARED = ["area", "self", "width", "height", "return", "def "]  # identifiers the clean document has: snippets of it
awkward = st.sampled_from(["\ud800", "\udfff", "\ud83d", "\x00", "\r", "\r\n", "\u2028", "\u2029", "\ufeff", "😀", "é"])
texts = st.lists(awkward | st.sampled_from(SHARED) | st.text(max_size=8), max_size=40).map("".join)


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("isolated")
    s = RawServer(str(tiny_model_dir), root / "server.log")
    s.initialize(root, {"maxTokens": 4, "deadlineMs": 0})
    s.root = root
    s.count = 0
    yield s
    assert s.close() == 0


def answers(s: RawServer, uri: str, line: int, character: int) -> None:
    got = s.inline(uri, line, character, timeout=60)
    assert "result" in got, got


def send_raw_json(s: RawServer, payload: dict) -> None:
    body = json.dumps(payload).encode()  # ensure_ascii: a lone surrogate goes as "\ud800"
    s.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(poison=texts, typed=texts)
def test_a_fuzzed_document_never_breaks_completions_in_another_or_in_itself(server, poison, typed):
    s = server
    s.count += 1
    fuzzed, clean = (s.root / f"fuzz{s.count}.py").as_uri(), (s.root / f"clean{s.count}.py").as_uri()
    send_raw_json(
        s,
        {
            "jsonrpc": "2.0",
            "method": "textDocument/didOpen",
            "params": {"textDocument": {"uri": fuzzed, "languageId": "python", "version": 1, "text": poison}},
        },
    )
    s.open(clean, CLEAN)
    answers(s, clean, 6, 4)
    # Typed into the clean document at its end, then asked there again.
    send_raw_json(
        s,
        {
            "jsonrpc": "2.0",
            "method": "textDocument/didChange",
            "params": {
                "textDocument": {"uri": clean, "version": 2},
                "contentChanges": [
                    {"range": {"start": {"line": 6, "character": 4}, "end": {"line": 6, "character": 4}}, "text": typed}
                ],
            },
        },
    )
    answers(s, clean, 6, 4)
    answers(s, fuzzed, 0, 0)
    stats = s.request("speclsp/stats", None)["result"]
    assert stats["errors"] == 0, stats
    for uri in (fuzzed, clean):
        s.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
