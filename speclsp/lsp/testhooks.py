"""Test-only hooks around a loaded backend, off unless their environment variables are set.

The server reads them here, once per model load (`ModelSlot`), and nowhere else:

- SPECLSP_FAULT_INJECT="generate-if-contains:MARKER": a generation whose prompt holds
  MARKER raises, so a test can check that a failing generation fails its own request only
  (tests/reliability/test_faults.py);
- SPECLSP_TEST_STEP_DELAY_S=SECONDS: the model thread waits this long after each step it
  streams, so an editor test can watch a tiny, fast model's suggestion grow on screen
  whatever the machine's speed (tests/editors/test_vscode_e2e.py). The text is unchanged.

The backend is wrapped (`HookedBackend`), so the session and the engine hold no test code.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

FAULT_INJECT_ENV = "SPECLSP_FAULT_INJECT"
STEP_DELAY_ENV = "SPECLSP_TEST_STEP_DELAY_S"


class HookedBackend:
    """A backend that behaves as `inner`, but for the hooks set."""

    def __init__(self, inner: Any, fault_marker: str = "", step_delay_s: float = 0.0) -> None:
        self.inner = inner
        self.fault_marker = fault_marker
        self.step_delay_s = step_delay_s

    def __getattr__(self, name: str) -> Any:  # everything else is the real backend's
        return getattr(self.inner, name)

    def generate(self, prompt_ids: Any, *, on_text: Callable[[str], None] | None = None, **kw: Any) -> Any:
        if self.fault_marker and self.fault_marker in self.inner.decode(prompt_ids):
            raise RuntimeError(f"injected fault ({FAULT_INJECT_ENV})")
        if on_text is not None and self.step_delay_s > 0:
            inner_on_text, delay = on_text, self.step_delay_s

            def on_text(text: str) -> None:
                inner_on_text(text)
                time.sleep(delay)

        return self.inner.generate(prompt_ids, on_text=on_text, **kw)


def install(completer: Any) -> Any:
    """`completer` with its backend wrapped when a hook's variable is set (else as it is)."""
    fault = os.environ.get(FAULT_INJECT_ENV, "").removeprefix("generate-if-contains:")
    delay = float(os.environ.get(STEP_DELAY_ENV) or 0)
    if fault or delay > 0:
        log.warning("test hooks on: %s", {FAULT_INJECT_ENV: fault, STEP_DELAY_ENV: delay})
        completer.backend = HookedBackend(completer.backend, fault, delay)
    return completer
