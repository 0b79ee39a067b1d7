"""Awkward documents and overload, over real stdio with the tiny model.

Awkward documents (emoji and astral characters under UTF-16, CRLF, NUL bytes, empty, one
very long line, 10 MB) must complete exactly as the in-process pipeline does for the same
text (the server's copy of the document matches the client's), in bounded time and memory.
Nothing is read from disk for a URI: a FIFO at a document's path would block a read. Logs at
-v hold no document text. A storm of 1,000 requests at 10 ms intervals across four
documents leaves one worker with at most one queued job per document, answers every request
once, the last ones with text, and memory flat. Figures go to reliability-figures.json.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from conftest import SERVER_ENV
from inprocess import expected_completion
from rawlsp import RawServer, record, rss_kb

OPTIONS = {"maxTokens": 24}
SECRET = "hunter2-SECRET-7f3a"


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("awkward")
    s = RawServer(str(tiny_model_dir), root / "server.log", "-v")
    s.root = root
    s.initialize(root, OPTIONS)
    yield s
    assert s.close() == 0


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def complete_at_end(s: RawServer, uri: str, text: str, open_first: bool = True) -> tuple[str, float]:
    if open_first:
        s.open(uri, text)
    lines = re.split(r"\r\n|\r|\n", text)  # as LSP counts lines: a lone "\r" ends one too
    t0 = time.monotonic()
    items = s.inline(uri, len(lines) - 1, utf16(lines[-1]))["result"]["items"]
    ms = (time.monotonic() - t0) * 1e3
    s.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    return (items[0]["insertText"] if items else ""), ms


AWKWARD = {
    "emoji": "s = '😀😀 𝔘𝔫𝔦'  # astral\nt = '😀' + ",
    "crlf": "def f(x):\r\n    y = x + 1\r\n    return ",
    "nul": "a = '\x00\x00'\nb = ",
    "empty": "",
    "bidi": "x = '\u202e\u0301ﬃ' ; z = ",
}


def test_awkward_documents_complete_exactly_as_in_process(server, tiny_lm, tmp_path_factory):
    times = {}
    for name, text in AWKWARD.items():
        got, times[name] = complete_at_end(server, (server.root / f"{name}.py").as_uri(), text)
        assert got == expected_completion(tiny_lm, text), name
    record(tmp_path_factory, "awkward_documents_ms", {k: round(v, 1) for k, v in times.items()})


def test_incremental_edits_after_astral_characters_keep_the_document_in_sync(server, tiny_lm):
    uri = (server.root / "edits.py").as_uri()
    text = "a = '😀𝔘'\n"
    server.open(uri, text)
    # Insert after the astral characters, by UTF-16 position (2 units each).
    for version, (line, char, new) in enumerate(
        [(0, utf16("a = '😀𝔘'"), "  # 😀"), (1, 0, "b = [\r\n"), (2, 0, "c = ")], start=2
    ):
        server.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [
                    {
                        "range": {"start": {"line": line, "character": char}, "end": {"line": line, "character": char}},
                        "text": new,
                    }
                ],
            },
        )
        lines = text.split("\n")
        offset = sum(len(x) + 1 for x in lines[:line]) + len(
            lines[line].encode("utf-16-le")[: 2 * char].decode("utf-16-le")
        )
        text = text[:offset] + new + text[offset:]
    got, _ = complete_at_end(server, uri, text, open_first=False)
    assert got == expected_completion(tiny_lm, text)


def test_one_did_change_with_20000_changes_keeps_the_document_in_sync(server, tiny_lm, tmp_path_factory):
    uri = (server.root / "many.py").as_uri()
    text = "def f(x):\r    return x\n" * 50
    server.open(uri, text)
    changes, n_lines = [], text.count("\n") * 2
    for k in range(20_000):  # one character at a time, all over the document
        line, char = (k * 7) % n_lines, k % 5
        changes.append(
            {
                "range": {"start": {"line": line, "character": char}, "end": {"line": line, "character": char}},
                "text": "abc\r\n"[k % 5],
            }
        )
    t0 = time.monotonic()
    server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2}, "contentChanges": changes})
    alive_ms = (server.request("speclsp/stats")["result"] and time.monotonic() - t0) * 1e3
    from speclsp.lsp.documents import DocumentStore

    reference = DocumentStore()  # the same edits applied one by one (the path for a few changes)
    reference.many_changes = len(changes)
    doc = reference.open(uri, "/many.py", "python", 1, text)
    for c in changes:
        r = c["range"]
        reference.change(
            doc,
            doc.version + 1,
            [((r["start"]["line"], r["start"]["character"], r["end"]["line"], r["end"]["character"]), c["text"])],
        )
    expected = doc.text
    server.notify(
        "textDocument/didChange",
        {
            "textDocument": {"uri": uri, "version": 3},
            "contentChanges": [
                {
                    "range": {"start": {"line": 10**6, "character": 0}, "end": {"line": 10**6, "character": 0}},
                    "text": "\nvalue = ",
                }
            ],
        },
    )
    got, _ = complete_at_end(server, uri, expected + "\nvalue = ", open_first=False)
    assert got == expected_completion(tiny_lm, expected + "\nvalue = ")
    record(tmp_path_factory, "many_changes", {"changes": len(changes), "applied_and_answered_ms": round(alive_ms, 1)})


def test_many_changes_in_one_notification_are_tokenized_and_split_into_lines_once(tiny_model_dir, monkeypatch):
    """20,000 one-character changes cost one pass over the text, not one each: counted as the
    characters handed to the tokenizer and to the line table (`positions.Lines`)."""
    from transformers import AutoTokenizer

    from speclsp.drafting.tokens import make_tokenize
    from speclsp.lsp import documents
    from speclsp.lsp.config import Config
    from speclsp.lsp.state import ServerState

    counted = {"tokenized": 0, "lines": 0}
    tokenize = make_tokenize(AutoTokenizer.from_pretrained(str(tiny_model_dir)))

    def counting_tokenize(text):
        counted["tokenized"] += len(text)
        return tokenize(text)

    class CountingLines(documents.Lines):
        def __init__(self, text):
            counted["lines"] += len(text)
            super().__init__(text)

    monkeypatch.setattr(documents, "Lines", CountingLines)
    state = ServerState(Config(), None)
    state.indexes.attach(counting_tokenize, lambda t: tokenize(t)[0], [])
    text = "def f(x):\n    return x + 1\n" * 800  # 21,600 characters, 1,600 lines
    state.open("file:///a.py", "/a.py", "python", 1, text)
    assert state.indexer.wait_for(state.indexer.mark(), 60)  # index updates run on their own thread
    counted.update(tokenized=0, lines=0)
    n = 20_000
    state.change("file:///a.py", 2, [((k % 1600, 4, k % 1600, 4), "z") for k in range(n)])
    assert state.indexer.wait_for(state.indexer.mark(), 60)
    final = state.documents.get("file:///a.py").text
    assert len(final) == len(text) + n
    assert counted["tokenized"] <= 2 * len(final)  # once (one changed region, tokenized whole)
    longest = max(len(x) for x in final.splitlines()) + 2
    assert counted["lines"] <= len(text) + n * 3 * longest  # the text once, then three lines a change
    assert state.indexes.index_for("file:///a.py").text("file:///a.py") == final
    state.shutdown()


def test_long_lines_and_10mb_documents_stay_bounded(server, tmp_path_factory):
    long_line = "x = [" + "1, " * 100_000  # one line of 300k characters
    got, long_ms = complete_at_end(server, (server.root / "long.py").as_uri(), long_line)
    assert got  # its time is recorded below (the index refuses such a line's document, see above)

    uri = (server.root / "huge.py").as_uri()
    rss0 = rss_kb(server.pid)
    huge = "y = 2\n" * 1_700_000  # 10.2 MB
    server.open(uri, huge)
    for version in range(2, 12):  # typing at the end of it
        server.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [
                    {
                        "range": {
                            "start": {"line": 1_700_000, "character": 0},
                            "end": {"line": 1_700_000, "character": 0},
                        },
                        "text": "z",
                    }
                ],
            },
        )
    t0 = time.monotonic()
    assert server.inline(uri, 1_700_000, 10)["result"] == {"items": []}  # over maxDocumentChars
    huge_ms = (time.monotonic() - t0) * 1e3
    rss_huge = rss_kb(server.pid)
    # Cut down to a normal size with a full change: indexed and completed again.
    server.notify(
        "textDocument/didChange",
        {"textDocument": {"uri": uri, "version": 20}, "contentChanges": [{"text": "def g(n):\n    return "}]},
    )
    assert server.inline(uri, 1, 11)["result"]["items"]
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    log = server.log_file.read_text()
    assert "over maxDocumentChars" in log and "indexed and completed again" in log
    growth = (rss_huge - rss0) / 1024
    record(
        tmp_path_factory,
        "large_documents",
        {
            "long_line_300k_chars_completion_ms": round(long_ms, 1),
            "doc_10MB_completion_ms": round(huge_ms, 1),
            "rss_growth_10MB_doc_and_10_edits_MB": round(growth, 1),
        },
    )
    assert growth < 200  # the text (~10 MB as str, a copy per edit in flight), not an index of it


def test_documents_come_from_the_client_never_from_disk(server, tiny_lm):
    fifo = server.root / "pipe.py"
    os.mkfifo(fifo)  # opening this for reading would block the server
    for uri, text in ((fifo.as_uri(), "from the client\nq = "), ("file:///etc/passwd", "root = ")):
        got, _ = complete_at_end(server, uri, text)
        assert got == expected_completion(tiny_lm, text)


def test_logs_at_v_hold_no_document_text(server):
    uri = (server.root / "secret.py").as_uri()
    server.open(uri, f"password = '{SECRET}'\nx = ")
    server.notify(
        "textDocument/didChange",
        {
            "textDocument": {"uri": uri, "version": 2},
            "contentChanges": [
                {"range": {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 4}}, "text": SECRET}
            ],
        },
    )
    server.inline(uri, 1, 4 + len(SECRET))
    server.notify("speclsp/didAccept", {"uri": uri, "text": SECRET, "kind": SECRET})
    server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "version": SECRET, "text": SECRET}})
    server.write(b"Content-Length: 30\r\n\r\n{" + f'"{SECRET}": '.encode() + b"x" * (29 - len(SECRET) - 4))
    server.request("speclsp/stats")
    assert SECRET not in server.log_file.read_text()


def test_a_storm_of_requests_is_answered_once_each_with_one_generation_at_a_time(server, tmp_path_factory):
    server.notify(
        "workspace/didChangeConfiguration",
        {"settings": {"speclsp": {"maxTokens": 16, "lookahead": "fixed:0", "deadlineMs": 0}}},
    )
    docs = [((server.root / f"storm{i}.py").as_uri(), f"def f{i}(a, b):\n    return ") for i in range(4)]
    for uri, text in docs:
        server.open(uri, text)
    for uri, _ in docs:  # warm: a generation per document
        server.inline(uri, 1, 11)
    base = server.request("speclsp/stats")["result"]
    rss0 = rss_kb(server.pid)
    # Typing at 100 keys/s spread over the documents, each key followed by a request at the
    # new cursor (as editors do): most suggestions are outdated before they are finished.
    n, ids, t0 = 1000, [], time.monotonic()
    typed = {uri: 0 for uri, _ in docs}
    versions = {uri: 1 for uri, _ in docs}
    for i in range(n):
        uri, _ = docs[i % len(docs)]
        versions[uri] += 1
        server.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": versions[uri]},
                "contentChanges": [
                    {
                        "range": {
                            "start": {"line": 1, "character": 11 + typed[uri]},
                            "end": {"line": 1, "character": 11 + typed[uri]},
                        },
                        "text": "q",
                    }
                ],
            },
        )
        typed[uri] += 1
        ids.append(
            server.send_request(
                "textDocument/inlineCompletion",
                {
                    "textDocument": {"uri": uri},
                    "position": {"line": 1, "character": 11 + typed[uri]},
                    "context": {"triggerKind": 2},
                },
            )
        )  # automatic
        time.sleep(max(0.0, t0 + (i + 1) * 0.010 - time.monotonic()))
    sent_s = time.monotonic() - t0
    last = server.response(ids[-1], 60)
    last_ms = (time.monotonic() - t0 - sent_s) * 1e3 + 10
    answers = [server.response(i, 60) for i in ids]
    stats = server.request("speclsp/stats")["result"]
    rss1 = rss_kb(server.pid)
    with_text = sum(1 for a in answers if a["result"]["items"])
    assert all("result" in a for a in answers)  # one answer each, no errors
    assert last["result"]["items"]
    for uri, _ in docs[:-1]:  # each document's last request is answered with text too
        k = max(i for i in range(n) if docs[i % len(docs)][0] == uri)
        assert answers[k]["result"]["items"]
    assert stats["workerPeakPending"] <= len(docs) + 1  # at most one queued job per document (+ the model)
    figures = {
        "requests": n,
        "interval_ms": 10,
        "documents": len(docs),
        "seconds_to_send": round(sent_s, 1),
        "answered_with_text": with_text,
        "answered_empty": n - with_text,
        "model_calls": stats["modelCalls"] - base["modelCalls"],
        "superseded": stats["superseded"] - base["superseded"],
        "worker_superseded": stats["workerSuperseded"] - base["workerSuperseded"],
        "cache_hits": stats["cacheHits"] - base["cacheHits"],
        "worker_peak_pending": stats["workerPeakPending"],
        "last_request_latency_ms": round(last_ms, 1),
        "latency_p50_ms": stats["latencyMs"]["p50"],
        "latency_p95_ms": stats["latencyMs"]["p95"],
        "rss_before_MB": round(rss0 / 1024, 1),
        "rss_after_MB": round(rss1 / 1024, 1),
    }
    record(tmp_path_factory, "storm", figures)
    assert rss1 - rss0 < 60 * 1024


def test_complete_cli_reads_invalid_utf8_and_refuses_binary(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_bytes(b"s = '\xff\xfe\xc3('\ny = ")
    binary = tmp_path / "bin.py"
    binary.write_bytes(b"\x7fELF\x00\x00\x01")
    cmd = [
        sys.executable,
        "-m",
        "speclsp",
        "complete",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--max-tokens",
        "4",
        "--json",
        "--line",
        "1",
        "--character",
        "4",
    ]
    r = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, env=SERVER_ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*cmd, str(binary)], capture_output=True, text=True, env=SERVER_ENV, timeout=60)
    assert r.returncode == 2 and "looks binary" in r.stderr
