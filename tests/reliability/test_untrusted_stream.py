"""Property: a remote server's streamed text is untrusted.

Whatever text arrives, in whatever pieces, what may be shown never holds a special token, a
terminal escape or a control character other than tab, newline and carriage return, and it
only ever grows while the stream does (a ghost text that shrank would flicker). The caps on
lines and bodies are checked against a real server in tests/unit/test_remote_backend.py.
"""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from speclsp.completion.fim import stop_token_strings, token_strings
from speclsp.remote.untrusted import retry_after, untrusted_text

MARKERS = tuple(dict.fromkeys([*token_strings(), *stop_token_strings()]))
FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

FRAGMENTS = (
    "\x1b[31m",
    "\x1b]",
    "\x1b[",
    "\x1b",
    "[3",
    "1m",
    "\x00",
    "\x07",
    "\x9b",
    "\r\n",
    "\t",
    "<|",
    "fim_",
    "|>",
    "<|endof",
    "ab",
    " ",
    "\n",
)
pieces = st.lists(st.sampled_from(MARKERS + FRAGMENTS) | st.text(max_size=4), max_size=25)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(parts=pieces)
@example(parts=["ab", "\x1b", "[3", "1m"])  # found by reading: "3" showed, then vanished
@example(parts=["x", "<|fim_", "middle|>", "more"])
def test_what_is_shown_holds_no_special_token_nor_control_character_and_only_grows(parts):
    raw, before, ended_at = "", "", None
    for part in parts:
        raw += part
        shown, ended = untrusted_text(raw, MARKERS)
        assert not FORBIDDEN.search(shown) and "\x1b[" not in shown, repr(shown)
        assert not any(m in shown for m in MARKERS), repr(shown)
        if ended_at is None:
            assert shown.startswith(before), (before, shown)  # it grows, it never takes back
            before = shown
        if ended and ended_at is None:
            ended_at = shown
        if ended_at is not None:
            assert shown == ended_at  # nothing after the end shows


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    value=st.none()
    | st.text(max_size=40)
    | st.integers(-(10**30), 10**30).map(str)
    | st.floats(allow_nan=True, allow_infinity=True).map(str)
)
def test_a_retry_hint_is_a_non_negative_number_of_seconds_or_none(value):
    got = retry_after(value)
    assert got is None or got >= 0.0
