"""The model's lifecycle in the server: loading -> ready | error, in the background.

Loading runs on the model worker thread (`scheduler.ModelWorker`) under its own key, so no
document's job can cancel it; the result comes back to the event loop, where a load that a
newer configuration replaced is dropped. The load itself is `completion.loader.load_completer`
(injectable for tests); its progress messages go to the editor as `$/progress` reports.

Ready means the weights are loaded (and, on a CPU's first start, the fastest precision
measured): the rest of the cost calibration runs afterwards, a pass at a time, while the
model worker is idle (`ModelWorker.set_idle`), so it never delays a completion by more
than one pass.

After a load, the objects that exist then (torch's and transformers' modules, the model:
hundreds of thousands) are moved out of the garbage collector's sight (`gc.freeze`): a full
collection over them held the GIL for a large part of a second, so every message waited
that long whenever one ran; after the freeze a full collection takes milliseconds. They are freed
by reference counting as ever; `gc.unfreeze` before a reload lets the collector see the
old model's cycles again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from ..backend import CancelToken
from . import testhooks
from .config import Config
from .scheduler import MODEL_KEY, ModelWorker

log = logging.getLogger(__name__)


def close_backend(backend: Any) -> None:
    """Release what a replaced backend holds (a remote one: its thread, event loop and HTTP
    client); a failure to close is logged, never raised."""
    try:
        backend.close()
    except Exception as e:  # noqa: BLE001 - closing must not stop the reload
        log.warning("closing the previous backend failed: %s", e)


class ModelSlot:
    """Which model is configured, whether it is ready, and its `Completer` once it is: the
    one owner of the backend's health. `state` is the load (loading, ready, error); `fault`
    the kind of the last `BackendError` while a ready backend cannot serve (a remote server
    down, rate-limited, ...), "" once a generation succeeds again. The editor hears of each:
    a status always, a message once per kind of fault, not at every keystroke."""

    def __init__(self, worker: ModelWorker, client: Any, load: Callable[..., Any] | None = None) -> None:
        self.worker = worker
        self.client = client  # the session's ClientChannel
        self._load = load  # completion.loader.load_completer unless a test injects another
        self.completer: Any = None  # completion.completer.Completer once ready
        self.state = "loading"
        self.message = "not started"
        self.device = ""
        self.dtype = ""  # the weights' precision ("int8", "bfloat16", ...; "" remote)
        self.dtype_reason = ""  # why: measured fastest on this CPU, asked for, the rule for cuda
        self.fault = ""  # the last BackendError's kind while it lasts ("" = serving)
        self._loading_key: tuple[str, ...] | None = None
        self._retired: list[Any] = []  # completers replaced by a reload, not closed yet

    @property
    def started(self) -> bool:
        return self._loading_key is not None

    @property
    def ready(self) -> bool:
        return self.state == "ready" and self.completer is not None

    def failed(self, message: str, kind: str) -> None:
        """A generation failed with a `BackendError` of `kind`."""
        self.client.status("error", message)  # first: an editor that sees the message has the state
        if kind != self.fault:
            self.client.warn(f"speclsp: {message}")
        self.fault = kind

    def served(self) -> None:
        """A generation succeeded: a fault, if any, is over."""
        if self.fault:
            self.fault = ""
            self.client.status("ready", f"{self.message}; serving again")

    def needs_reload(self, config: Config) -> bool:
        """A different model is configured, or the same one again after it failed."""
        return self._loading_key is not None and (config.model_key != self._loading_key or self.state == "error")

    def start(self, config: Config, loop: asyncio.AbstractEventLoop, on_ready: Callable[[Any], None]) -> None:
        """Load (or reload) `config`'s model in the background; `on_ready(completer)` runs
        on the event loop once it is ready."""
        key = config.model_key
        self._loading_key = key
        self.state, self.message, self.fault = "loading", f"loading {config.model}", ""
        if self.completer is not None:  # closed by the next load job that runs (this one, or a newer
            self._retired.append(self.completer)  # one if a configuration overtakes it before it starts)
        self.completer = None
        self.worker.set_idle(None)  # the old model's calibration
        self.client.status("loading", self.message)
        self.client.progress("begin", self.message)

        def say(msg: str) -> None:
            log.info("model: %s", msg)
            loop.call_soon_threadsafe(self.client.progress, "report", msg)

        def run(cancel: CancelToken) -> Any:
            while self._retired:  # after any job that still used them (this runs on the model worker)
                close_backend(self._retired.pop().backend)  # and the last reference to each is gone
            load = self._load
            if load is None:
                from ..completion.loader import load_completer

                load = load_completer
            gc.unfreeze()  # the replaced model's cycles are collectable again
            try:
                return testhooks.install(load(config, progress=say, calibrate="probe"))
            finally:  # a failed load too: unfrozen, every full collection walked it all again
                gc.collect()
                gc.freeze()  # see the module docstring

        t0 = time.monotonic()
        fut = self.worker.submit(MODEL_KEY, run)
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(self._loaded, key, f, t0, on_ready))

    def _loaded(self, key: tuple[str, ...], fut: Any, t0: float, on_ready: Callable[[Any], None]) -> None:
        if key != self._loading_key:  # a newer configuration is loading: this one is not used
            if not fut.cancelled() and fut.exception() is None:
                # Dropped unclosed, a remote backend kept its thread, event loop, HTTP client
                # and tokenizer for the life of the server (the soak: a thread per reload
                # that a configuration change overtook). Closing waits: not on the loop.
                asyncio.get_running_loop().run_in_executor(None, close_backend, fut.result().backend)
            return
        exc = None if not fut.cancelled() else RuntimeError("the load was cancelled")
        if exc is None:
            exc = fut.exception()
        if exc is not None:
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            if isinstance(exc, MemoryError):
                why = f"out of memory ({why or 'MemoryError'}); try a smaller model or dtype"
            self.state, self.message = "error", f"could not load {key[0]}: {why}"
            log.error("%s", self.message)
            self.client.progress("end", self.message)
            self.client.status("error", self.message)
            self.client.warn(f"speclsp: {self.message}")
            return
        completer = fut.result()
        self.completer = completer
        self.device = completer.backend.device
        self.dtype = completer.backend.dtype
        self.dtype_reason = completer.backend.dtype_reason
        on_ready(completer)
        # The cost calibration goes on a pass at a time while the model is idle; the
        # controllers draft from the probe of two sizes until it is complete.
        self.worker.set_idle(completer.calibrate_step)
        self.state = "ready"
        self.message = f"{key[0]} ready on {completer.backend.describe()}"
        log.info("model ready in %.1fs: %s", time.monotonic() - t0, self.message)
        self.client.progress("end", self.message)
        self.client.status("ready", self.message)
        if problem := completer.backend.problem:
            # A remote server not reachable yet: requests try it again (with backoff).
            self.client.warn(f"speclsp: {problem}; will keep trying")
