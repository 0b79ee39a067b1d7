"""Malformed protocol input over real stdio: every bad message gets the JSON-RPC error the
specifications ask for (or is dropped, for notifications), and the server keeps serving.

One real server (`python -m speclsp --stdio`, tiny model) is shared by the module; the raw
client (tests/support/rawlsp.py) writes bytes to its stdin. After every case the server
must still answer `speclsp/stats`, and at the end a fuzz run sends thousands of generated
messages and a normal completion must still work. Figures go to reliability-figures.json
(see `record`).
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawlsp import RawServer, frame, record, rss_kb

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
SERVER_NOT_INITIALIZED = -32002
OPTIONS = {"maxTokens": 8, "lookahead": "fixed:2"}


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    s = RawServer(str(tiny_model_dir), root / "server.log", "-v")
    s.root = root
    # Before initialize: requests get ServerNotInitialized, notifications are dropped.
    s.early = s.request(
        "textDocument/completion",
        {"textDocument": {"uri": (root / "x.py").as_uri()}, "position": {"line": 0, "character": 0}},
    )
    s.open((root / "early.py").as_uri(), "x = 1")
    s.initialize(root, OPTIONS)
    yield s
    assert s.close() == 0


def alive(s: RawServer) -> dict:
    """The server still answers a request (and has handled everything sent before it)."""
    r = s.request("speclsp/stats", None, timeout=30)
    assert "result" in r, r
    return r["result"]


def error_of(s: RawServer, msg_id, timeout: float = 10) -> int:
    return s.response(msg_id, timeout)["error"]["code"]


def null_id_errors(s: RawServer) -> list[int]:
    with s.cv:
        return [m["error"]["code"] for m in s.messages if "error" in m and m.get("id") is None]


def test_requests_before_initialize_get_server_not_initialized(server):
    assert server.early["error"]["code"] == SERVER_NOT_INITIALIZED
    # The didOpen sent before initialize was dropped: the document is unknown.
    assert alive(server)["documents"] == 0 or "early.py" not in server.log_file.read_text()


def test_invalid_json_is_a_parse_error_with_a_null_id(server):
    before = len(null_id_errors(server))
    for body in (b"{not json", b"\xff\xfe\x00garbage", b"", b"[" * 100_000 + b"]" * 100_000, b'{"a": 1' * 1000):
        server.write(frame(body) if body else b"Content-Length: 0\r\n\r\n")
    alive(server)
    assert null_id_errors(server)[before:] == [PARSE_ERROR] * 5  # an empty body is not JSON either


def test_non_objects_and_bad_envelopes_are_invalid_requests(server):
    before = len(null_id_errors(server))
    server.write(frame(b"[1, 2]") + frame(b'"text"') + frame(b"42"))
    server.send({"jsonrpc": "2.0", "id": [1], "method": "speclsp/stats"})  # an id must be a string or number
    server.send({"jsonrpc": "2.0", "id": 5.5e300})
    server.send({"jsonrpc": "1.0", "id": "old-version", "method": "speclsp/stats"})
    server.send({"jsonrpc": "2.0", "id": "method-not-a-string", "method": 17})
    server.send({"jsonrpc": "1.0", "method": "textDocument/didOpen"})  # a notification: dropped
    alive(server)
    assert null_id_errors(server)[before:] == [INVALID_REQUEST] * 5
    assert error_of(server, "old-version") == INVALID_REQUEST
    assert error_of(server, "method-not-a-string") == INVALID_REQUEST


def test_unknown_methods_requests_get_method_not_found_notifications_are_ignored(server):
    server.send({"jsonrpc": "2.0", "id": "unknown-1", "method": "no/such/method", "params": {"x": 1}})
    server.send({"jsonrpc": "2.0", "id": "unknown-2", "method": "$/no/such"})
    server.send({"jsonrpc": "2.0", "method": "no/such/notification", "params": [1, 2]})
    server.send({"jsonrpc": "2.0", "method": "$/unknownNotification"})
    alive(server)
    assert error_of(server, "unknown-1") == METHOD_NOT_FOUND
    assert error_of(server, "unknown-2") == METHOD_NOT_FOUND


def test_notification_methods_sent_with_an_id_are_answered_method_not_found_and_not_applied(server):
    uri = (server.root / "with-id.py").as_uri()
    doc = {"uri": uri, "languageId": "python", "version": 1, "text": "x = 1\n"}
    before = alive(server)
    log_before = server.log_file.read_text().count("configuration changed")
    sent = {
        "open": ("textDocument/didOpen", {"textDocument": doc}),
        "initialized": ("initialized", {}),
        "config": ("workspace/didChangeConfiguration", {"settings": {"speclsp": {"maxTokens": 3}}}),
        "cancel": ("$/cancelRequest", {"id": "whatever"}),
        "accept": ("speclsp/didAccept", {"uri": uri, "text": "y", "kind": "full"}),
        "exit": ("exit", None),
        "hover-bad-params": ("textDocument/hover", {"position": "nope"}),  # a method we do not serve
    }
    for key, (method, params) in sent.items():
        server.send({"jsonrpc": "2.0", "id": key, "method": method, "params": params})
    assert alive(server)["documents"] == before["documents"]  # the didOpen with an id was not applied
    server.open(uri, "x = 1\n")
    change = {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": "y = 2\n"}]}
    server.send({"jsonrpc": "2.0", "id": "change", "method": "textDocument/didChange", "params": change})
    server.send(
        {"jsonrpc": "2.0", "id": "close", "method": "textDocument/didClose", "params": {"textDocument": {"uri": uri}}}
    )
    after = alive(server)
    assert after["documents"] == before["documents"] + 1 and after["edits"] == before["edits"]
    assert server.log_file.read_text().count("configuration changed") == log_before
    keys = [*sent, "change", "close"]
    assert {k: error_of(server, k) for k in keys} == {k: METHOD_NOT_FOUND for k in keys}
    with server.cv:  # exactly one response each
        assert sorted(m["id"] for m in server.messages if m.get("id") in keys and "method" not in m) == sorted(keys)
    assert server.proc.poll() is None  # `exit` with an id did not end the server
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})


def test_wrong_types_are_invalid_params_and_bad_notifications_are_dropped(server):
    uri = (server.root / "typed.py").as_uri()
    server.open(uri, "def f(x):\n    return x")
    bad_positions = [
        {"line": "a", "character": 0},
        {"line": -1, "character": 0},
        {"line": 0},
        {"line": 2**40, "character": 0},
        None,
        # Wrong JSON types are not converted (the attack saw them answered):
        {"line": "0", "character": 0},
        {"line": 1.5, "character": 0},
        {"line": True, "character": 0},
        {"line": 0, "character": "3"},
    ]
    for i, pos in enumerate(bad_positions):
        server.send(
            {
                "jsonrpc": "2.0",
                "id": f"pos-{i}",
                "method": "textDocument/inlineCompletion",
                "params": {"textDocument": {"uri": uri}, "position": pos, "context": {"triggerKind": 1}},
            }
        )
    server.send({"jsonrpc": "2.0", "id": "no-params", "method": "textDocument/completion"})
    server.send(
        {
            "jsonrpc": "2.0",
            "id": "uri-number",
            "method": "textDocument/completion",
            "params": {"textDocument": {"uri": 5}, "position": {"line": 0, "character": 0}},
        }
    )
    server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "version": "two", "text": 3}})
    server.notify("textDocument/didChange", {"textDocument": {"uri": uri}, "contentChanges": "nope"})
    server.notify("workspace/didChangeConfiguration", "not an object")
    alive(server)
    codes = {f"pos-{i}": error_of(server, f"pos-{i}") for i in range(len(bad_positions))}
    assert codes == {f"pos-{i}": INVALID_PARAMS for i in range(len(bad_positions))}
    assert error_of(server, "no-params") == INVALID_PARAMS
    assert error_of(server, "uri-number") == INVALID_PARAMS  # a number is not a URI
    # The bad notifications changed nothing: the document still completes.
    assert server.inline(uri, 1, 12)["result"]["items"]


def test_positions_out_of_range_and_unknown_documents_answer_empty(server):
    uri = (server.root / "range.py").as_uri()
    server.open(uri, "x = 1\ny = ")
    assert server.inline(uri, 99, 0)["result"] == {"items": []}  # past the last line
    assert server.inline(uri, 1, 999)["result"]["items"][0]["range"]["end"] == {"line": 1, "character": 4}  # clamped
    assert server.inline((server.root / "never-opened.py").as_uri(), 0, 0)["result"] == {"items": []}
    server.notify(
        "textDocument/didChange",
        {"textDocument": {"uri": (server.root / "nope.py").as_uri(), "version": 2}, "contentChanges": [{"text": "x"}]},
    )
    server.notify("textDocument/didClose", {"textDocument": {"uri": (server.root / "nope.py").as_uri()}})
    # An edit whose range is past the end clamps to the end.
    server.notify(
        "textDocument/didChange",
        {
            "textDocument": {"uri": uri, "version": 2},
            "contentChanges": [
                {
                    "range": {"start": {"line": 50, "character": 0}, "end": {"line": 60, "character": 9}},
                    "text": "\nz = ",
                }
            ],
        },
    )
    assert server.inline(uri, 2, 4)["result"]["items"]
    alive(server)


def test_a_lone_cr_ends_a_line_for_completions_and_edits(server):
    uri = (server.root / "cr.py").as_uri()
    server.open(uri, "a = 1\rb = 2\rvalue = mul")
    items = server.inline(uri, 2, 11)["result"]["items"]
    assert f"req rawlsp-{server.next_id}: line 2 is past the end" not in server.log_file.read_text()
    assert items and items[0]["range"] == {"start": {"line": 2, "character": 8}, "end": {"line": 2, "character": 11}}
    assert items[0]["insertText"].startswith("mul")
    server.notify(
        "textDocument/didChange",
        {
            "textDocument": {"uri": uri, "version": 2},
            "contentChanges": [
                {"range": {"start": {"line": 1, "character": 0}, "end": {"line": 1, "character": 0}}, "text": "Q"}
            ],
        },
    )
    items = server.inline(uri, 1, 2)["result"]["items"]  # the start of line 1 is now "Qb"
    assert items and items[0]["range"]["start"] == {"line": 1, "character": 0}
    assert items[0]["insertText"].startswith("Qb")
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})


def test_versions_out_of_order_apply_in_order_and_drop_cached_suggestions(server):
    uri = (server.root / "versions.py").as_uri()
    server.open(uri, "a = ", version=10)
    first = server.inline(uri, 0, 4)["result"]["items"]
    for version, text in ((5, "b = "), (5, "c = ")):  # backwards, then repeated
        server.notify(
            "textDocument/didChange",
            {"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text}]},
        )
    again = server.inline(uri, 0, 4)["result"]["items"]
    assert first and again
    assert "went from version" not in server.log_file.read_text()
    assert "goes from version 10 back to 5" in server.log_file.read_text()
    assert alive(server)["modelCalls"] >= 2  # the cached suggestion for "a = " was not reused


def test_a_second_initialize_is_refused(server):
    server.send(
        {
            "jsonrpc": "2.0",
            "id": "init-2",
            "method": "initialize",
            "params": {"processId": None, "rootUri": None, "capabilities": {}},
        }
    )
    assert error_of(server, "init-2") == INVALID_REQUEST


def test_huge_and_misframed_messages(server, tmp_path_factory):
    uri = (server.root / "big.py").as_uri()
    big = ("x = 1  # padding\n" * 620_000)[:10_000_000]  # a 10 MB didOpen
    t0 = time.monotonic()
    server.open(uri, big)
    big_open_s = alive(server) and time.monotonic() - t0
    t0 = time.monotonic()
    assert server.inline(uri, 5, 0)["result"] == {"items": []}  # kept, not completed (maxDocumentChars)
    big_answer_ms = (time.monotonic() - t0) * 1e3
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})

    # Over the 64 MiB message limit: skipped in chunks without being held in memory.
    rss0 = rss_kb(server.pid)
    n = 80 * 2**20
    server.write(b"Content-Length: %d\r\n\r\n" % n)
    chunk = b" " * 2**20
    for _ in range(n // len(chunk)):
        server.write(chunk)
    alive(server)
    skip_growth_mb = (rss_kb(server.pid) - rss0) / 1024
    assert skip_growth_mb < 40

    # Garbage header lines and a header line of 100 kB are skipped.
    server.write(b"X-Whatever: 1\r\nnot a header at all\r\n" + b"y" * 100_000 + b"\r\n")
    # A Content-Length larger than the body sent: the body takes the start of the next
    # message (a parse error), the rest of that message is skipped as header garbage, and
    # the message after it is read normally.
    body = json.dumps({"jsonrpc": "2.0", "id": "short", "method": "speclsp/stats"}).encode()
    server.write(b"Content-Length: %d\r\n\r\n" % (len(body) + 30) + body)
    server.send({"jsonrpc": "2.0", "id": "swallowed", "method": "speclsp/stats"})
    assert alive(server)
    record(
        tmp_path_factory,
        "huge_messages",
        {
            "didOpen_10MB_s": round(big_open_s, 2),
            "completion_in_10MB_doc_ms": round(big_answer_ms, 1),
            "rss_growth_skipping_80MiB_message_MB": round(skip_growth_mb, 1),
        },
    )


@pytest.mark.parametrize("claimed", [b"99999999999999999999", b"1000000", b"%d" % (64 * 2**20 + 1)])
def test_a_content_length_past_the_next_header_resynchronises_there(server, claimed):
    """A claimed body that runs into the next message's header is dropped with one error
    (id null) and the header starts the next message: the requests after it are answered."""
    before = len(null_id_errors(server))
    body = json.dumps({"jsonrpc": "2.0", "method": "$/unknownNotification", "params": [1]}).encode()
    body += b" " * (60 - len(body))  # a 60-byte body
    ids = [f"after-{claimed[:4].decode()}-{i}" for i in range(20)]
    server.write(b"Content-Length: " + claimed + b"\r\n\r\n" + body)
    server.write(b"".join(frame({"jsonrpc": "2.0", "id": i, "method": "speclsp/stats"}) for i in ids))
    assert all("result" in server.response(i, timeout=20) for i in ids)
    alive(server)
    assert null_id_errors(server)[before:] == [PARSE_ERROR]  # exactly one, for the dropped message
    assert "runs past the next header" in server.log_file.read_text()


def test_an_absurd_content_length_reads_to_the_end_of_the_stream_and_exits(tmp_path):
    s = RawServer(str(tmp_path / "no-model"), tmp_path / "server.log")
    try:
        s.initialize(tmp_path, wait_ready=False)
        s.write(b"Content-Length: " + b"9" * 50 + b"\r\n\r\n" + b"{}" * 1000)
        s.proc.stdin.close()
        assert s.proc.wait(30) == 1  # the stream ended inside a message: no shutdown, code 1
        assert "over the" in s.log_file.read_text()
    finally:
        if s.proc.poll() is None:
            s.proc.kill()


# --- fuzz -------------------------------------------------------------------------------------

METHODS = [
    "textDocument/didOpen",
    "textDocument/didChange",
    "textDocument/didClose",
    "textDocument/completion",
    "textDocument/inlineCompletion",
    "speclsp/stats",
    "speclsp/didAccept",
    "$/cancelRequest",
    "workspace/didChangeWorkspaceFolders",
    "initialize",
    "initialized",
    "$/setTrace",
    "no/such",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=8,
)
positions = st.fixed_dictionaries(
    {"line": json_values | st.integers(0, 5), "character": json_values | st.integers(0, 9)}
)
params = json_values | st.fixed_dictionaries(
    {
        "textDocument": st.fixed_dictionaries(
            {
                "uri": st.sampled_from(["file:///f/a.py", "file:///f/b.py"]) | json_values,
                "languageId": st.just("python") | json_values,
                "version": st.integers(-5, 5) | json_values,
                "text": st.text(max_size=40) | json_values,
            }
        ),
        "position": positions,
        "contentChanges": st.lists(st.fixed_dictionaries({"text": st.text(max_size=20)}), max_size=2),
        "context": st.fixed_dictionaries({"triggerKind": st.integers(0, 3) | json_values}),
    }
)
envelopes = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0") | json_values, "method": st.sampled_from(METHODS) | st.text(max_size=10)},
    optional={"id": st.integers(0, 2**31) | st.text(max_size=6) | json_values, "params": params},
)
bodies = (
    envelopes.map(lambda m: json.dumps(m).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=60)
)
FUZZ_EXAMPLES = 2300  # ~11,900 messages (seeded: derandomized), ~25 s on 2 cores


def test_fuzzed_messages_never_stop_the_server(server, tmp_path_factory):
    sent = {"messages": 0, "batches": 0}
    rss0 = rss_kb(server.pid)
    t0 = time.monotonic()

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(bodies, min_size=1, max_size=16), st.booleans())
    def batch(messages, garbage_header):
        data = b"".join((b"X-Garbage: 1\r\n" if garbage_header else b"") + frame(m) for m in messages)
        server.write(data)
        sent["messages"] += len(messages)
        sent["batches"] += 1
        alive(server)  # answered, so everything before it was handled

    batch()
    fuzz_s = time.monotonic() - t0
    # Alive and correct: configuration applies and a normal completion works.
    server.notify("workspace/didChangeConfiguration", {"settings": {"speclsp": {**OPTIONS, "enabled": True}}})
    uri = (server.root / "after-fuzz.py").as_uri()
    server.open(uri, "def add(a, b):\n    return ")
    before = server.request("speclsp/stats")["result"]
    t1 = time.monotonic()
    answer = server.inline(uri, 1, 11)
    after = server.request("speclsp/stats")["result"]
    # A real generation ran for it and failed nothing. (What the random test model writes
    # depends on the documents the fuzz left open: it may be blank, so no text is asserted.)
    assert isinstance(answer["result"]["items"], list)
    assert after["modelCalls"] == before["modelCalls"] + 1 and after["errors"] == before["errors"]
    record(
        tmp_path_factory,
        "fuzz",
        {
            "messages": sent["messages"],
            "batches": sent["batches"],
            "seconds": round(fuzz_s, 1),
            "messages_per_s": round(sent["messages"] / fuzz_s),
            "completion_after_ms": round((time.monotonic() - t1) * 1e3, 1),
            "rss_before_MB": round(rss0 / 1024, 1),
            "rss_after_MB": round(rss_kb(server.pid) / 1024, 1),
        },
    )
    assert sent["messages"] >= 10_000 and server.proc.poll() is None


# --- in process: the real protocol and handlers, no subprocess ---------------------------------


class _Collect:
    """A writer that keeps what the server sends (framed JSON-RPC), in order."""

    def __init__(self):
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        pass

    def messages(self) -> list[dict]:
        out, rest = [], self.data
        while rest:
            head, _, rest = rest.partition(b"\r\n\r\n")
            n = int(head.split(b"Content-Length:")[1].split(b"\r\n")[0])
            out.append(json.loads(rest[:n]))
            rest = rest[n:]
        return out


def in_process_server(tmp_path):
    """The real server (handlers, protocol checks) fed message bodies through `receive`."""
    from speclsp.lsp.server import build_server

    ls = build_server()
    out = _Collect()
    ls.protocol.set_writer(out)
    ls.protocol.receive(
        json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {"processId": None, "rootUri": tmp_path.as_uri(), "capabilities": {}},
            }
        ).encode()
    )
    return ls, out


def test_notifications_leave_no_futures_behind(tmp_path):
    """pygls registers a future per generator or coroutine handler of a notification under
    a fresh uuid; one open, 1,000 changes and one close used to leave 1,002 of them."""
    import asyncio

    async def run():
        ls, out = in_process_server(tmp_path)
        uri = (tmp_path / "grow.py").as_uri()

        def notify(method, params):
            ls.protocol.receive(json.dumps({"jsonrpc": "2.0", "method": method, "params": params}).encode())

        notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": "x = 1\n"}},
        )
        for v in range(2, 1002):
            notify(
                "textDocument/didChange",
                {
                    "textDocument": {"uri": uri, "version": v},
                    "contentChanges": [
                        {
                            "range": {"start": {"line": 1, "character": 0}, "end": {"line": 1, "character": 0}},
                            "text": "y",
                        }
                    ],
                },
            )
        assert ls.state.documents.get(uri).text == "x = 1\n" + "y" * 1000
        notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        # A coroutine handler (configuration) and one that yields to ours (setTrace has none).
        notify("workspace/didChangeConfiguration", {"settings": {"speclsp": {"maxTokens": 9}}})
        notify("$/setTrace", {"value": "off"})
        for _ in range(3):
            await asyncio.sleep(0)
        assert ls.state.config.max_tokens == 9
        ls.protocol.receive(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "speclsp/stats"}).encode())
        assert ls.protocol._request_futures == {}  # nothing left of the 1,005 notifications
        assert [m["id"] for m in out.messages() if "id" in m] == [1, 2]  # initialize and stats, answered
        ls.state.shutdown()

    asyncio.run(run())
