"""The model worker: one thread runs every model call, the latest job per key wins.

The model can only do one thing at a time, and a completion for a document is worthless
once the user has typed on. Jobs are submitted with a key (`document_key(uri)`, or
`MODEL_KEY` for loading: the two kinds can never collide, whatever a URI says);
submitting a job cancels the previous job with the same key, dropping it if it has not
started and setting its CancelToken if it is running (the backend checks the token
between decode steps). Jobs with different keys run first come, first served.

Idle work (`set_idle`: the cost calibration, a pass at a time) runs only when no job has
been waiting or running for `quiet_s`; a job that arrives meanwhile waits for at most the
one slice in progress.

Results come back as `concurrent.futures.Future`s; the caller adds a done callback that
hands the result to its event loop with `call_soon_threadsafe`. The debounce lives in the
caller (see session.py), because it depends on when the *next* request arrives, which only
the event loop knows. `CancelToken` is the backend seam's (`speclsp.backend`), re-exported.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..backend import BackendError, CancelToken

__all__ = ["CancelToken", "ModelWorker", "MODEL_KEY", "document_key"]

log = logging.getLogger(__name__)

MODEL_KEY: Hashable = ("model",)  # loading the model


def document_key(uri: str) -> Hashable:
    """The key of a document's generation job."""
    return ("document", uri)


@dataclass
class _Job:
    key: Hashable
    run: Callable[[CancelToken], Any]
    cancel: CancelToken
    future: Future = field(default_factory=Future)


class ModelWorker:
    """A single daemon thread and a queue holding at most one job per key."""

    def __init__(self, name: str = "speclsp-model"):
        self._cv = threading.Condition()
        self._pending: dict[Hashable, _Job] = {}  # insertion order: first come, first served
        self._running: _Job | None = None
        self._stopped = False
        self.superseded = 0  # jobs dropped or cancelled because a newer one came for their key
        self.peak_pending = 0  # most jobs ever waiting at once (at most one per key)
        self._idle: Callable[[], bool] | None = None
        self._quiet_s = 1.0
        self._last_job_end = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, run: Callable[[CancelToken], Any], cancel: CancelToken | None = None) -> Future:
        """Queue `run(cancel)`; any older job for `key` is dropped or cancelled."""
        job = _Job(key, run, cancel or CancelToken())
        with self._cv:
            if self._stopped:
                job.future.cancel()
                return job.future
            self._cancel_locked(key)
            self._pending[key] = job
            self.peak_pending = max(self.peak_pending, len(self._pending))
            self._cv.notify()
        return job.future

    def cancel(self, key: Hashable) -> bool:
        """Drop the pending job for `key` and cancel the running one; True if there was one."""
        with self._cv:
            return self._cancel_locked(key)

    def _cancel_locked(self, key: Hashable) -> bool:
        found = False
        old = self._pending.pop(key, None)
        if old is not None:
            old.cancel.cancel()
            old.future.cancel()
            found = True
        if self._running is not None and self._running.key == key and not self._running.cancel.cancelled:
            self._running.cancel.cancel()
            found = True
        self.superseded += found
        return found

    def set_idle(self, step: Callable[[], bool] | None, quiet_s: float = 1.0) -> None:
        """Run `step()` whenever the worker has had no job for `quiet_s`, until it returns
        False (or raises: logged once, then dropped). None clears it."""
        with self._cv:
            self._idle, self._quiet_s = step, quiet_s
            self._cv.notify()

    def busy(self) -> bool:
        with self._cv:
            return self._running is not None or bool(self._pending)

    def stop(self) -> None:
        """Cancel everything; the thread ends after the job it is running (if any)."""
        with self._cv:
            self._stopped = True
            for job in self._pending.values():
                job.cancel.cancel()
                job.future.cancel()
            self._pending.clear()
            if self._running is not None:
                self._running.cancel.cancel()
            self._cv.notify()

    def _idle_due_locked(self) -> float | None:
        """Seconds until idle work may run (<= 0: now); None: there is none."""
        if self._idle is None:
            return None
        return self._last_job_end + self._quiet_s - time.monotonic()

    def _run_idle(self, step: Callable[[], bool]) -> None:
        try:
            more = step()
        except Exception:
            log.exception("idle work failed; dropped")
            more = False
        with self._cv:
            if not more and self._idle is step:
                self._idle = None

    def _loop(self) -> None:
        while True:
            idle = None
            with self._cv:
                while not self._pending and not self._stopped:
                    due = self._idle_due_locked()
                    if due is not None and due <= 0:
                        idle = self._idle
                        break
                    self._cv.wait(due)
                if self._stopped:
                    return
            if idle is not None:
                self._run_idle(idle)
                continue
            with self._cv:
                if not self._pending:
                    continue
                key = next(iter(self._pending))
                job = self._pending.pop(key)
                if not job.future.set_running_or_notify_cancel():
                    continue  # cancelled by its awaiter before it started
                self._running = job
            try:
                result = job.run(job.cancel)
            except BackendError as e:  # a known fault (a remote server's answer): its owner logs it
                log.info("model job %s failed: %s", key, e)
                job.future.set_exception(e)
            except BaseException as e:  # the job's owner decides what an error means
                log.exception("model job %s failed", key)
                job.future.set_exception(e)
            else:
                job.future.set_result(result)
            finally:
                with self._cv:
                    self._running = None
                    self._last_job_end = time.monotonic()
