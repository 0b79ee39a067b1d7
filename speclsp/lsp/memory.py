"""Giving freed memory back to the system, so that hours of editing keep the server's size.

What the long soak showed: Python objects stayed flat for an hour, yet the resident size
crept up 10-30%. The memory was free inside the C allocator, not in use: glibc's malloc
keeps freed blocks in its heaps (one per thread that allocates: the event loop, the model
worker, the index worker, the remote backend's thread) and returns only the top of each
heap. A 1M-character document, its token lists, a long prompt's activations: freed, the
pages stay resident, and the next big allocation lands elsewhere.

`MemoryKeeper` asks glibc (`malloc_trim(0)`, which also releases free pages in the middle
of every heap) every TRIM_EVERY_S, and SOON_S after a document closes, when the model
worker is idle (or three rounds have passed without an idle moment), on a pool thread: the
call takes milliseconds and holds no Python lock, so the event loop keeps serving. The
figures go out with `speclsp/stats`: `rssMB` (resident now), `mallocFreeMB` (free bytes
glibc held before the last trim), `trimmedMB` (returned so far) and `trimMaxMs`. On other
C libraries (macOS, Windows, musl) there is no such call and nothing is done.

`limit_arenas` (called by the server at start) keeps glibc to two heaps shared by all the
threads, so that what one thread frees another reuses.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

TRIM_EVERY_S = 20.0
SOON_S = 1.0
MB = 1 << 20


def thread_names() -> list[tuple[str, int]]:
    """Live threads counted by name, without the numbers Python appends ("ThreadPoolExecutor-0_3"
    counts as "ThreadPoolExecutor"): a leak shows as one name that keeps growing. Pairs rather
    than an object, as names like "speclsp-remote" are not identifiers some clients can keep."""
    names: dict[str, int] = {}
    for t in threading.enumerate():
        name = re.sub(r"-\d+(_\d+)?", "", t.name)
        names[name] = names.get(name, 0) + 1
    return sorted(names.items())


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]


def _glibc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        if hasattr(libc, "mallinfo2"):  # glibc 2.33+
            libc.mallinfo2.restype = _Mallinfo2
    except (OSError, AttributeError):  # musl has no malloc_trim
        return None
    return libc


_LIBC = _glibc()


M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)
ARENAS = 2


def limit_arenas(n: int = ARENAS) -> bool:
    """Let glibc keep at most `n` heaps (arenas) instead of eight per core. Each thread that
    allocates gets a heap of its own until the limit; memory one thread frees is reused only
    by the threads sharing its heap, so with a heap per thread the soak's resident size crept
    up while the memory in use stayed flat. Called before the server starts any thread.
    The `MALLOC_ARENA_MAX` environment variable, when set, wins."""
    if _LIBC is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return bool(_LIBC.mallopt(M_ARENA_MAX, n))


def _mallinfo() -> _Mallinfo2 | None:
    """glibc's heap figures (mallinfo2, glibc 2.33+); None elsewhere."""
    fn = getattr(_LIBC, "mallinfo2", None)
    return None if fn is None else fn()


def malloc_free_bytes() -> int | None:
    """Bytes glibc holds free in its heaps."""
    m = _mallinfo()
    return None if m is None else int(m.fordblks)


def malloc_in_use() -> tuple[int, int] | None:
    """Bytes in use from glibc's heaps, and in blocks it mapped on their own (large
    allocations)."""
    m = _mallinfo()
    return None if m is None else (int(m.uordblks), int(m.hblkhd))


def rss_bytes() -> int | None:
    """Resident set size of this process now (Linux); None elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def trim() -> int:
    """Return free heap pages to the system; the bytes the resident size shrank by."""
    if _LIBC is None:
        return 0
    before = rss_bytes() or 0
    _LIBC.malloc_trim(0)
    return max(0, before - (rss_bytes() or 0))


class MemoryKeeper:
    """Trims every `every` seconds when `busy()` is false (a generation allocates as it
    runs; trimming under it makes it fault pages in again), or after three rounds anyway."""

    def __init__(self, busy: Callable[[], bool], every: float = TRIM_EVERY_S) -> None:
        self.busy = busy
        self.every = every
        self.trimmed = 0
        self.free_before = 0
        self.worst_s = 0.0
        self.trims = 0
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._last = time.monotonic()

    def start(self) -> None:
        if self._task is None and _LIBC is not None:
            self._task = asyncio.ensure_future(self._run())

    def _trim_once(self) -> None:
        t0 = time.perf_counter()
        self.free_before = malloc_free_bytes() or 0
        self.trimmed += trim()
        self.trims += 1
        self.worst_s = max(self.worst_s, time.perf_counter() - t0)
        self._last = time.monotonic()

    def soon(self) -> None:
        """A document was closed: trim within SOON_S rather than at the next round."""
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.every)
                await asyncio.sleep(SOON_S)  # a burst of closes is one trim
            except TimeoutError:
                pass
            self._wake.clear()
            if self.busy() and time.monotonic() - self._last < self.every * 3:
                continue  # idle moments come often while one types; nonstop work waits less
            try:
                await loop.run_in_executor(None, self._trim_once)
            except RuntimeError:  # the pool is shut down: the server is stopping
                return

    def figures(self) -> dict[str, Any]:
        rss = rss_bytes()
        used = malloc_in_use()
        return {
            "rssMB": round(rss / MB, 1) if rss is not None else None,
            # Where the resident memory is: glibc's heaps in use, its own mappings, Python's
            # live blocks (objects of any size), the threads that allocate.
            "mallocHeapUsedMB": round(used[0] / MB, 1) if used else None,
            "mallocMappedMB": round(used[1] / MB, 1) if used else None,
            "pythonBlocks": sys.getallocatedblocks(),
            "threads": threading.active_count(),
            "threadNames": thread_names(),
            "mallocFreeMB": round(self.free_before / MB, 1),
            "trimmedMB": round(self.trimmed / MB, 1),
            "trimMaxMs": round(self.worst_s * 1e3, 1),
        }
