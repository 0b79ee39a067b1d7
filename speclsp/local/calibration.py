"""What a verify pass costs on this machine, measured in small slices, and cached by CPU.

The lookahead controllers price a draft of k tokens by the cost of one verify pass over
1 + k tokens. That cost depends on the CPU more than on anything else: on a CPU with AMX a
17-token pass costs little more than a one-token step in bf16, on an AVX2-only CPU an
order of magnitude more (bf16 has no hardware path there; figures: docs/benchmarks.md). So
it is measured here, but never in one long block before the server can serve:

- `probe` times a one-token step and a 16-token pass (k = 0 and 15) after a short prefix:
  two points, enough for the controller to draft sensibly at once (and for the choice of
  dtype on a CPU, `model.choose_cpu_precision`).
- `Calibration` then measures the rest of the grid one pass at a time (`step`), which the
  server runs while the model worker is idle, within a total budget of a few seconds
  however slow a pass is: sizes whose predicted pass would block a keystroke too long are
  skipped (the controller interpolates and extrapolates between the measured ones), and
  fewer repeats fit on a slow machine.

Everything is cached under the cache's `calibration/` folder, keyed by `fingerprint()`: the
model, device, precision, thread count, torch and transformers versions, and the CPU (its
model string and the instruction set torch and oneDNN use), so a home directory shared by
two machines never prices one CPU with the other's costs. Every read tolerates any content
(`read_json`): a file that cannot be read or parsed is ignored with one warning and
measured again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The draft lengths k whose verify pass (1 + k tokens) the calibration times. Matrix kernels
# work on tiles of rows, so a pass costs about the same up to the end of a tile and jumps
# after it: a point on each side of every 16-token edge lets the controller's linear
# interpolation follow that staircase.
CALIBRATED_KS = (0, 1, 3, 7, 8, 15, 16, 31, 32, 47, 48, 63, 64)
# Measured in this order, the small sizes first: where a drafted token is dear (a CPU
# without fast multi-row kernels) the controller drafts only a few, and a budget that runs
# out leaves the large sizes to extrapolation rather than k = 1..6 to a line from k = 0 to
# k = 7 (that overpriced them on an AVX2-only CPU and kept drafts short).
ORDER = (0, 15, 7, 8, 1, 3, 16, 31, 32, 63, 64, 47, 48)
PROBE_KS = (0, 15)
FIRST_CHUNK = 16  # the prefix is fed as 16 tokens (a bail-out point for a hopeless dtype),
PREFILL_ROWS = 96  # then 96 more: a prefill-sized pass (quant.DENSE_ROWS < 96), timed
CONTEXT = FIRST_CHUNK + PREFILL_ROWS  # tokens of cached prefix before each timed pass
MAX_FILE_BYTES = 1 << 20  # a cache file larger than this is not ours


def fingerprint(lm: Any, threads: int) -> dict[str, str]:
    """What the costs depend on. The CPU's own words (`platform.processor()` is empty on
    Linux, /proc/cpuinfo has the model name) and the instruction sets torch dispatches to:
    `ATEN_CPU_CAPABILITY` and `ONEDNN_MAX_CPU_ISA` change them (the AVX2 profile)."""
    import torch
    import transformers

    return {
        "model": str(lm.name),
        "device": str(lm.device),
        "precision": str(lm.precision),
        "threads": str(threads),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": cpu_name(),
        "capability": str(torch.backends.cpu.get_cpu_capability()),
        "onednn_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "mkl": os.environ.get("MKL_ENABLE_INSTRUCTIONS", ""),
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def key_of(fp: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(sorted(fp.items()))).encode()).hexdigest()[:16]


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None (with one warning) for anything else: missing (no
    warning), not a regular file (a FIFO would block the reader), too large, not UTF-8,
    not JSON, or nested too deep to parse."""
    try:
        if not path.exists():
            return None
        if not path.is_file():
            raise ValueError("not a regular file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError("larger than any file speclsp writes")
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        return json.loads(data.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        log.warning("ignoring %s (%s): it is measured again", path, str(e)[:120])
        return None


def write_json(path: Path, data: Any, what: str) -> None:
    """Write atomically (a reader never sees half a file); a failure is a warning only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not save %s: %s", what, e)


def parse_costs(raw: Any) -> dict[int, float]:
    """{k: seconds} from JSON; entries that are not a draft length and a positive finite
    number of seconds are dropped."""
    out: dict[int, float] = {}
    if not isinstance(raw, dict):
        return out
    for k, v in raw.items():
        try:
            kk, vv = int(k), float(v)
        except (TypeError, ValueError, OverflowError):
            continue
        if 0 <= kk <= 1024 and math.isfinite(vv) and 0 < vv < 3600:
            out[kk] = vv
    return out


def timed_pass(lm: Any, kv: Any, ids: Sequence[int], context: int, k: int) -> float:
    """Seconds for one verify pass over 1 + k tokens after `context` cached ones."""
    lm.crop(kv, context)
    lm.sync()
    t0 = time.perf_counter()
    lm.forward(kv, ids[context : context + 1 + k])
    lm.sync()
    return time.perf_counter() - t0


def probe_ids(lm: Any) -> list[int]:
    return ((lm.encode("import os\n" * 40) or [0]) * 8)[: CONTEXT + max(CALIBRATED_KS) + 1]


@dataclass
class Probe:
    """A quick measurement of one precision: verify costs of k = 0 and 15, and a prefill."""

    costs: dict[int, float]
    prefill_s: float  # seconds to prefill PREFILL_ROWS tokens in one chunk

    def to_json(self) -> dict[str, float]:
        return {**{str(k): v for k, v in self.costs.items()}, "prefill": self.prefill_s}

    @classmethod
    def from_json(cls, raw: Any) -> Probe | None:
        costs = parse_costs(raw)
        try:
            prefill = float(raw["prefill"])
        except (TypeError, KeyError, ValueError, OverflowError):
            return None
        return cls(costs, prefill) if set(PROBE_KS) <= set(costs) and math.isfinite(prefill) and prefill > 0 else None


def probe(
    lm: Any, repeats: int = 3, give_up_s: float | None = None, give_up_prefill_s: float | None = None
) -> Probe | None:
    """Costs of k = 0 and k = 15, fastest of `repeats`, and a prefill's. None if the first
    16 tokens took longer than `give_up_s`, or the first prefill longer than
    `give_up_prefill_s` (a precision that slow is out of the running: stop measuring it)."""
    from .model import KVState

    ids = probe_ids(lm)
    kv = KVState()
    lm.sync()
    t0 = time.perf_counter()
    lm.forward(kv, ids[:FIRST_CHUNK], logits=False)
    lm.sync()
    if give_up_s is not None and time.perf_counter() - t0 > give_up_s:
        return None
    prefill_s = math.inf
    for _ in range(repeats):  # the first of a shape pays for allocations
        lm.crop(kv, FIRST_CHUNK)
        t0 = time.perf_counter()
        lm.forward(kv, ids[FIRST_CHUNK:CONTEXT], logits=False)
        lm.sync()
        prefill_s = min(prefill_s, time.perf_counter() - t0)
        if give_up_prefill_s is not None and prefill_s > give_up_prefill_s:
            return None
    costs = {k: math.inf for k in PROBE_KS}
    for _ in range(repeats):
        for k in PROBE_KS:
            costs[k] = min(costs[k], timed_pass(lm, kv, ids, CONTEXT, k))
    # A 16-token pass never costs less than a one-token step: a lower figure is noise, and
    # a falling cost curve would make every longer draft look cheaper still.
    costs[15] = max(costs[15], costs[0])
    return Probe(costs, prefill_s)


class Calibration:
    """The verify-pass costs of one loaded model, completed a pass at a time.

    `table()` is what is known now (never empty once probed); `step()` times one more
    pass and says whether there is more to do; `run(budget_s)` steps until done or out of
    time. The finished table is saved and, for the same fingerprint, loaded complete next
    time. `budget_s` caps the seconds spent in timed passes; `max_pass_s` skips sizes whose
    predicted pass is longer (a request waits at most that for an idle-time step).
    """

    def __init__(
        self,
        lm: Any,
        cache_root: Path,
        threads: int,
        known: Mapping[int, float] | None = None,
        budget_s: float = 5.0,
        max_pass_s: float = 1.0,
        repeats: int = 3,
    ):
        self.lm = lm
        self.fingerprint = fingerprint(lm, threads)
        self.path = cache_root / "calibration" / (key_of(self.fingerprint) + ".json")
        self.budget_s, self.max_pass_s, self.repeats = budget_s, max_pass_s, repeats
        self.samples: dict[int, list[float]] = {k: [v] for k, v in (known or {}).items()}
        self.spent_s = 0.0
        self.done = False
        self._kv: Any = None
        self._ids: list[int] = []
        saved = read_json(self.path)
        if isinstance(saved, dict) and saved.get("grid") == list(CALIBRATED_KS):
            costs = parse_costs(saved.get("costs"))
            if len(costs) >= 2 and 0 in costs:
                self.samples = {k: [v] for k, v in costs.items()}
                self.done = True

    @property
    def learned_path(self) -> Path:
        """Where the tree controller's acceptance estimates for this model are kept."""
        return self.path.with_suffix(".acceptance.json")

    def table(self) -> dict[int, float]:
        """{k: seconds} measured so far (probing first if nothing is)."""
        if not self.samples:
            first = probe(self.lm)
            self.samples = {k: [v] for k, v in (first.costs if first else {}).items()}
        return {k: min(v) for k, v in sorted(self.samples.items())}

    def _predicted(self, k: int) -> float:
        t = self.table()
        ks = sorted(t)
        lo = max((x for x in ks if x <= k), default=ks[0])
        hi = min((x for x in ks if x >= k), default=ks[-1])
        if lo == hi:
            if k > ks[-1] and len(ks) >= 2:  # beyond the last point: the mean slope so far
                a, b = ks[0], ks[-1]  # (one tile edge's jump would overstate it)
                return t[b] + max(t[b] - t[a], 0.0) * (k - b) / (b - a)
            return t[lo]
        return t[lo] + (t[hi] - t[lo]) * (k - lo) / (hi - lo)

    def _next_k(self) -> int | None:
        for r in range(self.repeats):
            for k in ORDER:
                if len(self.samples.get(k, ())) > r:
                    continue
                if self._predicted(k) > self.max_pass_s:
                    continue
                if self.spent_s + self._predicted(k) > self.budget_s:
                    return None
                return k
        return None

    def step(self) -> bool:
        """Time one pass; False once there is nothing more to measure (then saved)."""
        if self.done:
            return False
        k = self._next_k()
        if k is None:
            self._finish()
            return False
        from .model import KVState

        if self._kv is None:
            self._ids = probe_ids(self.lm)
            self._kv = KVState()
            t0 = time.perf_counter()
            self.lm.forward(self._kv, self._ids[:FIRST_CHUNK], logits=False)
            self.lm.forward(self._kv, self._ids[FIRST_CHUNK:CONTEXT], logits=False)
            self.spent_s += time.perf_counter() - t0
            return True
        seconds = timed_pass(self.lm, self._kv, self._ids, CONTEXT, k)
        self.spent_s += seconds
        self.samples.setdefault(k, []).append(seconds)
        return True

    def run(self, budget_s: float | None = None, progress: Callable[[str], None] | None = None) -> dict[int, float]:
        """Step until done (`budget_s` replaces the budget, None: keep it)."""
        if budget_s is not None and not self.done:
            self.budget_s = budget_s
        t0 = time.perf_counter()
        while self.step():
            pass
        if progress is not None and time.perf_counter() - t0 > 0.5:
            progress(f"calibrated in {time.perf_counter() - t0:.1f}s")
        return self.table()

    def _finish(self) -> None:
        self.done = True
        self._kv = None
        costs = self.table()
        log.info(
            "calibrated verify cost per draft length (%.1fs of passes): %s",
            self.spent_s,
            {k: round(v * 1e3, 1) for k, v in costs.items()},
        )
        write_json(
            self.path,
            {
                "grid": list(CALIBRATED_KS),
                "fingerprint": self.fingerprint,
                "costs": {str(k): v for k, v in costs.items()},
            },
            "the calibration",
        )
