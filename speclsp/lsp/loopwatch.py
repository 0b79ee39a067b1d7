"""How long the event loop was kept from other work: the worst stall any handler caused.

A task sleeps `interval` again and again and records how late it wakes. Every message is
handled on this one loop, so a handler that runs 300 ms makes the next wake ~300 ms late,
and every other request waits that long too. The figures go out with `speclsp/stats`
(`loopLagMaxMs`, `loopLagP99Ms`) and the reliability tests read them. A wake every 25 ms
costs microseconds; a stall shorter than the interval may be missed by up to the interval.

While the model loads, the loading thread holds the GIL for long stretches (weights, the
first forwards, the calibration, a full garbage collection): those seconds are a known
one-off, shown as loading progress, and `paused` keeps a stall that began or ended
during a load out of the figures.

The garbage collector is the other cause a handler cannot see: a collection holds the GIL
whichever thread triggers it. Collections are timed (`gc.callbacks`); a stall over
STALL_LOG_S is logged with how much of it they took, and the worst collection goes out as
`gcMaxMs`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

STALL_LOG_S = 0.1


class LoopWatch:
    def __init__(self, interval: float = 0.025, keep: int = 4096, paused: Callable[[], bool] | None = None) -> None:
        self.interval = interval
        self.paused = paused or (lambda: False)
        self.worst_s = 0.0
        self.lags: deque[float] = deque(maxlen=keep)
        self._task: asyncio.Task | None = None
        self.gc_worst_s = 0.0
        self._gc_since_wake = 0.0
        self._gc_t0 = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_t0
        self._gc_since_wake += took
        if not self.paused():
            self.gc_worst_s = max(self.gc_worst_s, took)
            if took > STALL_LOG_S / 2:
                log.info(
                    "garbage collection of generation %s took %.0f ms on %s: %s objects freed, %d frozen",
                    info.get("generation"),
                    took * 1e3,
                    threading.current_thread().name,
                    info.get("collected"),
                    gc.get_freeze_count(),
                )

    def start(self) -> None:
        if self._task is None:
            gc.callbacks.append(self._on_gc)
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            was_paused = self.paused()
            self._gc_since_wake = 0.0
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - t0 - self.interval)
            if was_paused or self.paused():  # a load began or ended during the stall
                continue
            if lag > STALL_LOG_S:
                log.warning(
                    "the event loop stalled %.0f ms (garbage collection: %.0f ms of it)",
                    lag * 1e3,
                    min(lag, self._gc_since_wake) * 1e3,
                )
            self.lags.append(lag)
            self.worst_s = max(self.worst_s, lag)

    def figures(self) -> dict[str, Any]:
        lags = sorted(self.lags)
        p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else 0.0
        return {
            "loopLagMaxMs": round(self.worst_s * 1e3, 1),
            "loopLagP99Ms": round(p99 * 1e3, 1),
            "gcMaxMs": round(self.gc_worst_s * 1e3, 1),
        }
