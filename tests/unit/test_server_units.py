"""Unit tests of the server's pure parts: position encodings, options, the model worker's
"latest job per key wins", the debounce, and typed-through matching. No model, no server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speclsp.backend import CancelToken
from speclsp.lsp import memory
from speclsp.lsp.config import Config, parse_options, settings_section
from speclsp.lsp.generations import Generation
from speclsp.lsp.positions import UTF8, UTF16, UTF32, Lines, from_codepoints, to_codepoints
from speclsp.lsp.scheduler import ModelWorker
from speclsp.lsp.session import debounce_s

LINE = 'x = "é😀𝔘" + y'  # é: 1 UTF-16 unit / 2 bytes; 😀 and 𝔘: 2 units / 4 bytes


@pytest.mark.parametrize(
    "encoding,units_per_char",
    [
        (UTF16, [1, 1, 1, 1, 1, 1, 2, 2, 1, 1, 1, 1, 1]),
        (UTF8, [1, 1, 1, 1, 1, 2, 4, 4, 1, 1, 1, 1, 1]),
        (UTF32, [1] * 13),
    ],
)
def test_columns_round_trip_in_every_encoding(encoding, units_per_char):
    assert len(LINE) == len(units_per_char)
    units = 0
    for col, width in enumerate(units_per_char):
        assert from_codepoints(LINE, col, encoding) == units
        assert to_codepoints(LINE, units, encoding) == col
        units += width
    assert from_codepoints(LINE, len(LINE), encoding) == units


def test_columns_clamp_past_the_end_and_round_down_inside_a_character():
    assert to_codepoints(LINE, 999, UTF16) == len(LINE)
    assert to_codepoints(LINE, 7, UTF16) == 6  # the middle of 😀 (units 6..7) -> its start
    assert to_codepoints(LINE, 8, UTF8) == 6  # inside 😀's four bytes (7..10)
    assert from_codepoints(LINE, 999, UTF16) == from_codepoints(LINE, len(LINE), UTF16)


def test_lines_convert_offsets_and_client_positions():
    text = "ab\r\n" + LINE + "\n"
    lines = Lines(text)
    assert len(lines) == 3 and lines.line(0) == "ab" and lines.line(2) == ""  # "\r\n" is one line ending
    off = lines.offset_from_client(1, 8, UTF16)  # after 😀
    assert text[:off].endswith("😀")
    assert lines.client_position(off, UTF8) == (1, 11)
    assert lines.position(len(text)) == (2, 0)
    assert lines.offset(7, 0) == len(text)


def test_lines_end_at_lf_crlf_and_a_lone_cr():
    text = "a = 1\rb = 2\r\nc\n\rd\r"
    lines = Lines(text)
    assert [lines.line(n) for n in range(len(lines))] == ["a = 1", "b = 2", "c", "", "d", ""]
    assert lines.offset(1, 0) == text.index("b") and lines.offset(1, 99) == text.index("\r\n")
    assert lines.position(text.index("d")) == (4, 0)
    assert lines.offset_from_client(2, 5, UTF16) == text.index("c") + 1  # clamped before the ending


# An independent model of LSP's text edits: lines end at "\n", "\r\n" or a lone "\r";
# a UTF-16 column inside a surrogate pair rounds down; past the end of a line clamps to it,
# past the last line to the end of the text.
def _reference_offset(text: str, line: int, units: int) -> int:
    i, n = 0, 0
    while n < line:
        while i < len(text) and text[i] not in "\r\n":
            i += 1
        if i == len(text):
            return len(text)
        i += 2 if text[i] == "\r" and text[i + 1 : i + 2] == "\n" else 1
        n += 1
    used = 0
    while i < len(text) and text[i] not in "\r\n":
        width = 2 if ord(text[i]) > 0xFFFF else 1
        if used + width > units:
            break
        used += width
        i += 1
    return i


TEXT_PIECES = st.sampled_from(["a", "bc", " ", "\n", "\r\n", "\r", "😀", "é"])
texts = st.lists(TEXT_PIECES, max_size=30).map("".join)
positions_ = st.tuples(st.integers(0, 8), st.integers(0, 8))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(texts, st.lists(st.tuples(positions_, positions_, texts), max_size=8))
def test_document_edits_match_a_reference_model_of_lsp_edits_with_every_line_ending(text, edits):
    from speclsp.lsp.documents import DocumentStore

    store = DocumentStore()
    doc = store.open("file:///t.py", "/t.py", "python", 1, text)
    expected = text
    for a, b, new in edits:
        changes = [((a[0], a[1], b[0], b[1]), new)]
        s, e = sorted((_reference_offset(expected, *a), _reference_offset(expected, *b)))
        expected = expected[:s] + new + expected[e:]
        store.change(doc, doc.version + 1, changes)
        assert doc.text == expected
    # All of them in one notification, too: one by one, and on lines (as above MANY_CHANGES).
    for many in (99, 0):
        store.many_changes = many
        doc2 = store.open("file:///u.py", "/u.py", "python", 1, text)
        store.change(doc2, 2, [((a[0], a[1], b[0], b[1]), new) for a, b, new in edits])
        assert doc2.text == expected


@settings(max_examples=200, deadline=None, derandomize=True)
@given(texts, st.integers(0, 200))
def test_the_completion_request_splits_the_document_at_the_cursor_offset_whatever_the_line_endings(text, at):
    from speclsp.completion.completer import build_request
    from speclsp.completion.context import PromptBudget, split_at

    offset = min(at, len(text))
    req = build_request("/t.py", text, Lines(text).starts, offset, others=(), budget=PromptBudget())
    assert split_at(req.text, req.line, req.character) == (text[:offset], text[offset:])


def test_options_parse_camel_case_and_fall_back_on_bad_values():
    cfg, warnings = parse_options(
        {
            "maxTokens": 32,
            "contextBudget": 1024,
            "lookahead": "fixed:4",
            "languages": {"markdown": False},
            "deadlineMs": 0,
        }
    )
    assert warnings == []
    assert (cfg.max_tokens, cfg.context_budget, cfg.lookahead, cfg.deadline_ms) == (32, 1024, "fixed:4", 0)
    assert not cfg.enabled_for("markdown") and cfg.enabled_for("python")

    cfg2, warnings = parse_options(
        {"maxTokens": "many", "device": "tpu", "lookahead": "fixed:99", "streaming": "yes", "colour": 1, "dtype": None},
        cfg,
    )
    assert cfg2 == cfg  # every bad value keeps what was there
    assert len(warnings) == 5
    for key in ("maxTokens", "device", "lookahead", "streaming", "colour"):
        assert any(f"'{key}'" in w for w in warnings)
    assert parse_options([1, 2], cfg)[1] and parse_options([1, 2], cfg)[0] == cfg


def test_language_switches_and_master_switch():
    cfg, _ = parse_options({"languages": {"*": False, "python": True}})
    assert cfg.enabled_for("python") and not cfg.enabled_for("rust")
    assert not Config(enabled=False).enabled_for("python")


def test_settings_section_finds_our_options():
    assert settings_section({"speclsp": {"maxTokens": 3}}) == {"maxTokens": 3}
    assert settings_section({"maxTokens": 3}) == {"maxTokens": 3}
    assert settings_section({"python": {"x": 1}}) is None
    assert settings_section(None) is None


def test_worker_runs_only_the_latest_job_per_key():
    worker = ModelWorker()
    gate = threading.Event()
    started = threading.Event()
    ran: list[str] = []

    def job(name, wait=False):
        def run(cancel: CancelToken):
            if wait:
                started.set()
                gate.wait(5)
                return "cancelled" if cancel.cancelled else name
            ran.append(name)
            return name

        return run

    blocker = worker.submit("a", job("a1", wait=True))  # running, holds the thread
    assert started.wait(5)
    b1 = worker.submit("b", job("b1"))
    b2 = worker.submit("b", job("b2"))  # replaces b1 before it started
    a2 = worker.submit("a", job("a2"))  # cancels the running a1
    gate.set()
    assert blocker.result(5) == "cancelled"
    assert b1.cancelled()
    assert b2.result(5) == "b2" and a2.result(5) == "a2"
    assert ran == ["b2", "a2"]  # first come, first served across keys
    worker.stop()


def test_debounce_follows_typing_pace_and_never_delays_invoked_requests():
    assert debounce_s(0.1, invoked=True) == 0.0
    assert debounce_s(None, invoked=False) > 0.0
    assert debounce_s(0.1, invoked=False) == pytest.approx(0.075)
    assert debounce_s(2.0, invoked=False) == 0.0  # slow typing: answer at once
    assert debounce_s(0.5, invoked=False) <= 0.25


def test_typed_through_matches_only_the_suggestion_being_typed():
    if True:  # plain data: no event loop needed
        gen = Generation("file:///a.py", 1, "def f(\nx = 1\n", 6)
        gen.grow("self, value):")
        suffix = "\nx = 1\n"
        assert gen.typed_through("def f(", suffix) == 0
        assert gen.typed_through("def f(sel", suffix) == 3
        assert gen.typed_through("def f(sex", suffix) is None  # diverged
        assert gen.typed_through("def f(sel", "\nx = 2\n") is None  # the text after the cursor changed
        assert gen.typed_through("def ", suffix) is None  # deleted back past the start
        assert gen.typed_through("def f(self, value): x", suffix) is None
        assert gen.typed_through("def f(self, value): x", suffix, ahead=True) == 15  # typed past the model
        assert gen.typed_through("def f(self, value): xxxxxxxxxx", suffix, ahead=True) is None  # too far
        assert gen.typed_through("def f(self, vx", suffix, ahead=True) is None
        gen.finish("eos")
        assert gen.typed_through("def f(self, value): x", suffix, ahead=True) is None  # it will not catch up
        assert gen.typed_through("def f(self, value):", suffix) is None  # nothing left to show


def test_draft_model_options_parse_and_pick_the_drafter():
    cfg, warnings = parse_options({"draftModel": "qwen2.5-coder-0.5b"})
    assert not warnings and cfg.draft_model == "qwen2.5-coder-0.5b" and cfg.drafter_kind == "hybrid"
    assert cfg.model_key != Config().model_key  # a draft model means a reload
    cfg2, warnings = parse_options({"drafter": "model"}, cfg)
    assert not warnings and cfg2.drafter_kind == "model"
    cfg3, warnings = parse_options({"drafter": "telepathy"}, cfg2)
    assert warnings and "drafter" in warnings[0] and cfg3.drafter_kind == "model"
    assert Config().drafter_kind == "ngram"


def test_remote_backend_options_parse_reload_and_never_echo_a_key():
    cfg, warnings = parse_options(
        {"backend": "openai", "endpoint": " http://gpu:8000/v1 ", "remoteModel": "coder", "apiKeyEnv": "TEAM_KEY"}
    )
    assert warnings == []
    assert (cfg.backend, cfg.endpoint, cfg.remote_model, cfg.api_key_env) == (
        "openai",
        "http://gpu:8000/v1",
        "coder",
        "TEAM_KEY",
    )
    assert cfg.model_key != Config().model_key  # a change of backend or endpoint reloads
    bad, warnings = parse_options({"backend": "gpu", "endpoint": "gpu:8000", "apiKeyEnv": "sk-live-abc123"}, cfg)
    assert bad == cfg and len(warnings) == 3
    assert not any("sk-live-abc123" in w for w in warnings)


@pytest.mark.parametrize("encoding", [UTF8, UTF16, UTF32])
def test_locate_turns_client_units_into_the_cursor_the_answer_needs(encoding):
    from speclsp.lsp.documents import DocumentStore
    from speclsp.lsp.job import locate

    text = "x = 1\r\ns = '😀é' + na"
    doc = DocumentStore().open("file:///a.py", "/a.py", "python", 3, text)
    line = "s = '😀é' + na"
    units = {UTF8: len(line.encode("utf-8")), UTF16: len(line.encode("utf-16-le")) // 2, UTF32: len(line)}[encoding]
    cur = locate(doc, 1, units, encoding)
    assert (cur.prefix, cur.suffix, cur.offset) == (text, "", len(text))
    assert cur.word == "na" and cur.character == units and cur.word_start == units - 2 and cur.version == 3
    past = locate(doc, 1, units + 50, encoding)  # a column past the end clamps to it
    assert past == cur
    assert locate(doc, 0, 3, encoding).word == "" and locate(doc, 0, 3, encoding).prefix == "x ="


# --- memory ------------------------------------------------------------------------------------


@pytest.mark.skipif(memory._LIBC is None, reason="glibc only: other C libraries have no malloc_trim")
def test_trim_gives_memory_freed_inside_the_heap_back_to_the_system():
    # 200 MB in 1,000-byte blocks (too big for Python's own small-object allocator: they
    # come from malloc), then all but every 100th freed: the heap cannot shrink from its
    # top, so what free() left is resident until it is trimmed.
    blocks = [bytes(1000) + bytes([i % 256]) for i in range(200_000)]
    kept = blocks[::100]
    del blocks
    rss_freed = memory.rss_bytes()
    assert memory.malloc_free_bytes() is None or memory.malloc_free_bytes() > 150 * memory.MB
    returned = memory.trim()
    assert returned > 150 * memory.MB, (rss_freed, returned)
    assert len(kept) == 2000


ARENAS_PROBE = """
import sys, threading
from speclsp.lsp import memory
if sys.argv[1] == "limit":
    assert memory.limit_arenas(2)
start = threading.Barrier(8)
def work():
    start.wait()
    for _ in range(50):
        blocks = [bytes(2000) for _ in range(500)]
        del blocks
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
heaps = 0  # glibc's heaps for threads: anonymous, read-write, on a 64 MiB boundary
for line in open("/proc/self/maps"):
    f = line.split()
    if len(f) == 5 and f[1].startswith("rw") and int(f[0].split("-")[0], 16) % (64 << 20) == 0:
        heaps += 1
print(heaps)
"""


@pytest.mark.skipif(memory._LIBC is None, reason="glibc only")
def test_the_server_keeps_two_heaps_however_many_threads_allocate():
    """The soak's resident size crept up while the memory in use stayed flat: every thread
    that allocated had a heap of its own (up to eight per core), and what one thread freed
    only its heap could reuse. Eight threads allocating at once: one heap each by default,
    the main heap and one other with the server's limit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def heaps(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", ARENAS_PROBE, mode], env=env, capture_output=True, text=True, check=True
        )
        return int(out.stdout)

    assert heaps("default") >= 4
    assert heaps("limit") <= 1


def test_the_index_queue_is_full_by_the_text_it_holds_not_by_its_length():
    """Typing while a reload re-indexes every open document queues hundreds of small edits:
    the transport stopped reading at 256 of them, and every request (the statistics, a
    ping, shutdown) then waited minutes for the index. Its memory is what must be bounded."""
    from speclsp.lsp.indexing import MAX_QUEUED_CHARS, IndexWorker

    worker = IndexWorker()
    gate = threading.Event()
    try:
        worker.submit(lambda: gate.wait(10))  # a long re-index holds the thread
        for _ in range(1000):
            worker.submit(lambda: None, 20_000)  # typing in a 20k-character document
        assert worker.pending() == 1001 and worker.fill() < 1.0
        for _ in range(MAX_QUEUED_CHARS // 1_000_000):
            worker.submit(lambda: None, 1_000_000)  # typing in a 1M-character one
        assert worker.fill() > 1.0
        gate.set()
        assert worker.wait_for(worker.mark(), 10)
        assert worker.fill() == 0.0
    finally:
        gate.set()
        worker.stop()
