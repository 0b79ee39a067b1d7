"""The index worker: n-gram index updates run on a thread of their own, in order.

Indexing tokenizes and posts every token of what it is given: opening a 1 MB document, or
closing one, costs far more than the ~50 ms the event loop may spend on a message. So the
state hands every index update (attach, open, edit, close, history, folders, caps) to this
one thread, in the order the notifications came, and the loop moves on. Under the GIL the
loop still gets its turn every few milliseconds while a long update runs.

A generation must draft from the index as it was when its request arrived, as if updates
were immediate: it takes a `mark()` on the loop, and its model job `wait_for(mark)`s before
it builds its drafter. The index itself is thread-safe (its lock), so the model thread's
lookups and this thread's updates never see a half-applied edit.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

# Past either, the transport stops reading until the queue is half as full. Mostly by the
# memory the queue pins: typing while a reload re-indexes every open document for seconds
# queues hundreds of small edits, and holding the reader back at 256 updates kept every
# request (a ping, the statistics, shutdown) waiting for minutes. Each edit holds the whole
# text after it, so edits to a large document fill it quickly, as they should; and a flood
# of tiny ones (thousands of didOpen or didChange at once) stops at MAX_QUEUED updates.
MAX_QUEUED = 2_000
MAX_QUEUED_CHARS = 32 << 20


class IndexWorker:
    """One daemon thread running submitted updates first in, first out."""

    def __init__(self, name: str = "speclsp-index") -> None:
        self._cv = threading.Condition()
        self._queue: deque[tuple[int, Callable[[], None], int]] = deque()
        self._submitted = 0
        self._done = 0
        self._chars = 0  # characters of text the queued updates hold
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, update: Callable[[], None], chars: int = 0) -> None:
        """Queue `update`; `chars`: how much text it holds until it has run (a document's
        text, the text after an edit), what the queue costs in memory."""
        with self._cv:
            if self._stopped:
                return
            self._submitted += 1
            self._chars += chars
            self._queue.append((self._submitted, update, chars))
            self._cv.notify_all()

    def mark(self) -> int:
        """The number of updates submitted so far (`wait_for` it to see them all applied)."""
        with self._cv:
            return self._submitted

    def wait_for(self, mark: int, timeout: float | None = None) -> bool:
        """Block until the first `mark` updates are applied; False on timeout or stop."""
        with self._cv:
            return self._cv.wait_for(lambda: self._done >= mark or self._stopped, timeout) and self._done >= mark

    def pending(self) -> int:
        with self._cv:
            return self._submitted - self._done

    def fill(self) -> float:
        """How full the queue is: 1.0 at MAX_QUEUED updates or MAX_QUEUED_CHARS characters
        of text held, whichever comes first (the reader waits above it)."""
        with self._cv:
            return max((self._submitted - self._done) / MAX_QUEUED, self._chars / MAX_QUEUED_CHARS)

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._queue.clear()
            self._chars = 0
            self._cv.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopped:
                    self._cv.wait()
                if self._stopped:
                    return
                seq, update, chars = self._queue.popleft()
            try:
                update()
            except Exception:  # a bug of ours: this update is lost, the index re-syncs on the next edit
                log.exception("index update failed")
            del update  # the text it held goes now
            with self._cv:
                self._done = seq
                self._chars -= chars
                self._cv.notify_all()
