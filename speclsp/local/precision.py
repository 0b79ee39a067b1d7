"""Which precision a model runs in on this CPU: measured once, cached per CPU.

On a CPU with bf16 hardware (AMX, AVX512-BF16) bf16 is faster than float32; on an
AVX2-only CPU it has no hardware path and every drafted token costs about a step more, while
int8 weights (quant.py) read a quarter of float32's bytes per decode step. No rule gets
all of these right, so the first load of a model on a CPU measures each candidate
(`calibration.probe`: a one-token step, a 16-token verify pass and a prefill; bf16 last,
not even loaded where a prefill-sized bf16 matmul of the model's own shape takes 3x
float32's, and given up as soon as its first 16 tokens or its first prefill take 3x the
best), prices a
typical request with the chain controller's own cost model (`expected_rate`) and keeps
the fastest. The choice, its reason and the probes are cached under the cache's `dtype/`
folder, keyed by the model and the CPU (`calibration.fingerprint`); an explicit dtype
always wins (model.load).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import calibration
from . import registry as models

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from .model import LoadedModel

log = logging.getLogger(__name__)

CANDIDATES = ("float32", "int8", "bfloat16")
# int8 weights change the model's output a little (its greedy text agreed with float32's on
# 90% of the tokens of the held-out edits, docs/benchmarks.md): they are chosen only when
# they are this much faster than the best float precision, not on a close call.
INT8_MARGIN = 0.05


def pick(rates: dict[str, float]) -> str:
    """The precision to use from each one's expected tokens per second."""
    floats = {p: r for p, r in rates.items() if p != "int8"}
    best_float = max(floats, key=lambda p: floats[p])
    if rates.get("int8", 0.0) > (1 + INT8_MARGIN) * floats[best_float]:
        return "int8"
    return best_float


# A precision whose first 16 tokens, prefill or prefill-sized matmul take this many times
# the best measured is out of the running (bf16 without bf16 hardware: seconds per pass).
GIVE_UP = 3.0


def bf16_matmul_slowdown(model: PreTrainedModel, rows: int = calibration.PREFILL_ROWS) -> float:
    """How many times longer the model's largest hidden-layer matmul takes over `rows` rows
    in bfloat16 than in float32, on this CPU (fastest of three; a few ms). Over GIVE_UP,
    bf16 is not loaded and probed at all: where the CPU has no bf16 hardware that saves a
    second load and seconds of bf16 passes."""
    import time

    from torch.nn import functional as F

    vocab = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not vocab]
    if not linears:
        return 1.0
    w = max(linears, key=lambda m: m.weight.numel()).weight.detach()
    x = torch.randn(rows, w.shape[1], dtype=torch.float32)

    def best(xx: torch.Tensor, ww: torch.Tensor) -> float:
        out = math.inf
        with torch.inference_mode():
            for _ in range(3):
                t0 = time.perf_counter()
                F.linear(xx, ww)
                out = min(out, time.perf_counter() - t0)
        return out

    w32, w16 = w.float(), w.bfloat16()
    return best(x.bfloat16(), w16) / max(best(x, w32), 1e-9)


# A typical request priced for the choice of precision: this many new prompt tokens to
# prefill (typing extends the cached prompt by a few; opening a file prefills thousands)
# and this many tokens to generate.
TYPICAL_PREFILL, TYPICAL_TOKENS = 128, 48


def expected_rate(p: calibration.Probe) -> float:
    """Tokens per second of a typical request (TYPICAL_PREFILL new prompt tokens, then
    TYPICAL_TOKENS generated) under the chain controller's own cost model, drafting a
    typical workspace draft (15 tokens after an 8-token match, its prior acceptance)."""
    from ..drafting.controller import CostAwareLookahead
    from ..drafting.drafter import Draft

    draft = Draft(tokens=tuple(range(15)), source="workspace", match_len=8)
    decode_rate = CostAwareLookahead.calibrated(p.costs).plan(draft)[1]
    prefill = p.prefill_s * TYPICAL_PREFILL / calibration.PREFILL_ROWS
    return TYPICAL_TOKENS / (prefill + TYPICAL_TOKENS / decode_rate)


def choose_cpu_precision(
    build: Callable[[str, str], LoadedModel],
    quantize: Callable[[LoadedModel], None],
    name: str,
    say: Callable[[str], None],
) -> LoadedModel:
    """The precision with the best expected speculative throughput on this CPU, by
    measurement: a one-token step, a 16-token pass and a prefill (`calibration.probe`) in
    float32, int8 weights and bfloat16, priced by the controller's own cost model for a
    typical request (`expected_rate`).
    Cached per model and CPU (`calibration.fingerprint`), with the probes, which then
    seed the calibration. bfloat16 is measured last, skipped when one matmul shows it far
    slower (`bf16_matmul_slowdown`), and given up early when its prefill alone does (no
    bf16 hardware: seconds per pass)."""
    threads = torch.get_num_threads()
    path, fp = _choice_path(name)
    saved = calibration.read_json(path)
    if isinstance(saved, dict) and saved.get("precision") in CANDIDATES:
        p = saved["precision"]
        lm = build(p, str(saved.get("reason", "measured"))[:300] + " (cached)")
        probes_saved = saved.get("probes")
        got = calibration.Probe.from_json(probes_saved.get(p) if isinstance(probes_saved, dict) else None)
        lm.probe_costs = got.costs if got else {}
        return lm
    say("measuring which precision is fastest on this CPU (once)")
    # Timings do not depend on the values: one bf16 load serves float32 (upcast) and int8
    # (quantized from it, as `build("int8")` does); bfloat16 is loaded again and measured
    # last, unless its matmuls already showed it out of the running.
    probes: dict[str, calibration.Probe | None] = {}
    lm = build("bfloat16", "")
    slow_bf16 = bf16_matmul_slowdown(lm.model)
    lm.model.float()
    lm.dtype, lm.precision = torch.float32, "float32"
    probes["float32"] = calibration.probe(lm, repeats=2)
    quantize(lm)
    probes["int8"] = calibration.probe(lm, repeats=2)
    best_c15 = min(c.costs[15] for c in probes.values() if c)
    best_prefill = min(c.prefill_s for c in probes.values() if c)
    other = None
    log.info("a prefill-sized bfloat16 matmul takes %.2fx float32's here", slow_bf16)
    if slow_bf16 <= GIVE_UP:
        other = build("bfloat16", "")
        probes["bfloat16"] = calibration.probe(
            other, repeats=2, give_up_s=GIVE_UP * best_c15, give_up_prefill_s=GIVE_UP * best_prefill
        )
    else:
        probes["bfloat16"] = None
        log.info("bfloat16 not loaded: over %.0fx", GIVE_UP)
    rates = {p: expected_rate(c) if c else 0.0 for p, c in probes.items()}
    best = pick(rates)
    cap = torch.backends.cpu.get_cpu_capability()
    why = (
        "fastest measured here"
        if rates[best] == max(rates.values())
        else f"int8 not {INT8_MARGIN:.0%} faster than the best float precision measured here"
    )
    reason = f"{why} ({cap}, {threads} threads); tok/s of a typical request: " + ", ".join(
        f"{p} {r:.1f}"
        if probes[p]
        else f"{p} given up (its prefill-sized matmul {slow_bf16:.1f}x float32's)"
        if slow_bf16 > GIVE_UP
        else f"{p} given up (prefill too slow)"
        for p, r in sorted(rates.items(), key=lambda pr: -pr[1])
    )
    log.info("precision on this CPU: %s; %s", best, reason)
    if best == "bfloat16" and other is not None:
        lm = other
    elif best == "float32":
        del lm
        lm = build("float32", "")
    del other
    lm.reason = reason
    best_probe = probes[best]
    lm.probe_costs = dict(best_probe.costs) if best_probe else {}
    calibration.write_json(
        path,
        {
            "precision": best,
            "reason": reason,
            "fingerprint": fp,
            "probes": {p: c.to_json() if c else None for p, c in probes.items()},
        },
        "the precision chosen",
    )
    return lm


def _choice_path(name: str) -> tuple[Path, dict[str, str]]:
    """Where the precision chosen for model `name` on this CPU is cached, and its key."""
    fp = calibration.fingerprint(_Named(name), torch.get_num_threads())
    fp.pop("precision")
    return models.cache_dir() / "dtype" / (calibration.key_of(fp) + ".json"), fp


def cached_cpu_choice(name: str) -> tuple[str, str] | None:
    """(precision, why) chosen for `name` on this CPU by an earlier load, if any."""
    if "SPECLSP_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["SPECLSP_THREADS"]))
    saved = calibration.read_json(_choice_path(name)[0])
    if isinstance(saved, dict) and saved.get("precision") in CANDIDATES:
        return str(saved["precision"]), str(saved.get("reason", ""))[:300]
    return None


@dataclass
class _Named:
    """What `calibration.fingerprint` reads of a model before one is loaded."""

    name: str
    device: str = "cpu"
    precision: str = ""
