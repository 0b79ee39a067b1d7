"""What a remote server's answer may do to us: every byte of it is untrusted.

A server may be broken or hostile: one 10 MB SSE line stalled the event loop for seconds and
a 200 MB one grew the process until the kernel killed it; a 100 MB error page was read whole for a 200-character
message; a 429 with `Retry-After: 60` was retried on every keystroke; and special tokens,
terminal escapes and NUL in the streamed text were shown as ghost text. These helpers bound
what is read (`capped_lines`, `read_capped`), honour the retry hint (`retry_after`) and
decide what of the text may be shown (`untrusted_text`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

MAX_LINE_BYTES = 1 << 20  # one SSE line (a token's event is ~300 bytes)
MAX_STREAM_BYTES = 16 << 20  # a whole completion's stream
MAX_ERROR_BYTES = 64 << 10  # what is read of an error response (its message is cut to 200 characters)
RETRY_AFTER_MAX_S = 300.0  # a Retry-After longer than this is capped


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delay-seconds or an HTTP date), else None."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    import datetime

    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


async def read_capped(resp: Any, cap: int) -> bytes:
    """At most `cap` bytes of a response body (an error page of 100 MB is not read whole)."""
    out = bytearray()
    async for chunk in resp.aiter_bytes():
        out += chunk[: cap - len(out)]
        if len(out) >= cap:
            break
    return bytes(out)


async def capped_lines(resp: Any):
    """The response's lines (without their ends); None once a line passes MAX_LINE_BYTES
    or the stream MAX_STREAM_BYTES (the caller stops there: nothing that size is parsed)."""
    buf, total = bytearray(), 0
    async for chunk in resp.aiter_bytes():
        total += len(chunk)
        if total > MAX_STREAM_BYTES:
            yield None
            return
        buf += chunk
        while (nl := buf.find(b"\n")) >= 0:
            line = bytes(buf[:nl]).rstrip(b"\r")
            del buf[: nl + 1]
            yield line.decode("utf-8", "replace")
        if len(buf) > MAX_LINE_BYTES:
            yield None
            return
    if buf:
        yield bytes(buf).rstrip(b"\r").decode("utf-8", "replace")


# Never shown from a remote stream: terminal escape sequences (CSI and two-byte ESC) and
# control characters other than tab, newline and carriage return (NUL, BEL, C1, DEL).
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


# An escape sequence still arriving at the end of the text: held back like a marker's start.
_ESCAPE_ARRIVING = re.compile(r"\x1b(\[[0-?]*[ -/]*)?$")


def untrusted_text(raw: str, markers: Sequence[str]) -> tuple[str, bool]:
    """What a remote stream's text may show: cut at the first special token written as text
    (True: the completion ended there), without control characters or escape sequences,
    and without a tail that may be the start of a special token or of an escape sequence
    still arriving (what is shown only grows)."""
    cut = min((i for m in markers if (i := raw.find(m)) >= 0), default=-1)
    text = raw[:cut] if cut >= 0 else raw
    if cut < 0:  # hold back the start of a marker still arriving ("<|fim_" of "<|fim_middle|>")
        held = max(
            (n for m in markers for n in range(min(len(m) - 1, len(text)), 0, -1) if text.endswith(m[:n])), default=0
        )
        text = text[: len(text) - held]
        if esc := _ESCAPE_ARRIVING.search(text):  # "\x1b[3" shows "3" until "1m" completes it
            text = text[: esc.start()]
    return _CONTROL.sub("", text), cut >= 0
