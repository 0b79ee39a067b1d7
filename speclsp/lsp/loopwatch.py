"""How long the event loop was kept from other work: the worst stall any handler caused.

A task sleeps `interval` again and again and records how late it wakes. Every message is
handled on this one loop, so a handler that runs 300 ms makes the next wake ~300 ms late,
and every other request waits that long too. The figures go out with `speclsp/stats`
(`loopLagMaxMs`, `loopLagP99Ms`) and the reliability tests read them. A wake every 25 ms
costs microseconds; a stall shorter than the interval may be missed by up to the interval.

While the model loads, the loading thread holds the GIL for long stretches (weights, the
first forwards, the calibration): those seconds are a known one-off, shown as loading
progress, and `paused` keeps them out of the figures.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable


class LoopWatch:
    def __init__(self, interval: float = 0.025, keep: int = 4096, paused: Callable[[], bool] | None = None) -> None:
        self.interval = interval
        self.paused = paused or (lambda: False)
        self.worst_s = 0.0
        self.lags: deque[float] = deque(maxlen=keep)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - t0 - self.interval)
            if self.paused():
                continue
            self.lags.append(lag)
            self.worst_s = max(self.worst_s, lag)

    def figures(self) -> dict[str, Any]:
        lags = sorted(self.lags)
        p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else 0.0
        return {"loopLagMaxMs": round(self.worst_s * 1e3, 1), "loopLagP99Ms": round(p99 * 1e3, 1)}
