"""The cost calibration and the choice of precision on a CPU, with the tiny model.

The calibration measures a pass at a time within a budget, is cached by CPU, and survives
any content in its cache files; the idle worker runs it only between jobs; a CPU picks its
precision by measurement, caches the choice, and an explicit dtype always wins; int8
weights are cached once quantized.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from speclsp.local import calibration, model, precision, quant
from speclsp.local import registry as models
from speclsp.lsp.scheduler import ModelWorker


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A cache of this test's own, sharing the converted models."""
    root = tmp_path / "cache"
    root.mkdir()
    real = models.cache_dir() / "models"
    (root / "models").symlink_to(real, target_is_directory=True)
    monkeypatch.setenv("SPECLSP_CACHE", str(root))
    return root


def fresh(tiny_model_dir, dtype="float32"):
    return model.load(str(tiny_model_dir), device="cpu", dtype=dtype, warm_up=False)


def test_the_calibration_starts_from_a_probe_and_measures_the_grid_a_pass_at_a_time(cache, tiny_model_dir):
    lm = fresh(tiny_model_dir)
    cal = lm.calibration
    assert not cal.done
    assert set(lm.step_costs()) == {0, 15}  # a probe of two sizes, before any step
    steps = 0
    while cal.step():
        steps += 1
    # One prefill of the prefix, then the rest of the grid, three rounds on a fast model.
    assert steps == 1 + 3 * len(calibration.CALIBRATED_KS) - 2
    assert set(lm.step_costs()) == set(calibration.CALIBRATED_KS)
    again = calibration.Calibration(lm, cache, int(cal.fingerprint["threads"]))
    assert again.done and again.table() == lm.step_costs()  # read back, not measured


def test_a_slow_machine_measures_fewer_sizes_within_its_budget(cache, tiny_model_dir):
    lm = fresh(tiny_model_dir)
    probe = lm.step_costs()
    # Every pass "predicted" too long: nothing beyond the probe is measured.
    cal = calibration.Calibration(lm, cache / "other", 2, known=probe, max_pass_s=min(probe.values()) / 10)
    assert cal.run() == probe and cal.done
    # A budget of the prefix's prefill and about three of the cheapest passes: the probe's
    # sizes, then the next ones in order (the small ones), and then it stops. Priced from the
    # whole grid measured here first (each size's best of three), by its cheapest pass: a
    # pass of the tiny model takes ~1 ms, and one slow pass (another process on the machine)
    # in the probe, or in a single round, once priced "a few passes" above the whole grid.
    whole = calibration.Calibration(lm, cache / "whole", 2, budget_s=60.0)
    costs = whole.run()
    assert set(costs) == set(calibration.CALIBRATED_KS)
    cheapest = min(costs.values())
    cal = calibration.Calibration(lm, cache / "third", 2, known={0: cheapest, 15: cheapest}, repeats=1)
    assert cal.step() and cal.spent_s > 0  # the prefix's prefill
    budget = cal.spent_s + 3 * cheapest
    table = cal.run(budget_s=budget)
    assert 2 < len(table) < len(calibration.CALIBRATED_KS)
    assert cal.spent_s <= budget + max(table.values())


def test_an_older_grid_is_measured_again(cache, tiny_model_dir):
    lm = fresh(tiny_model_dir)
    calibration.write_json(lm.calibration.path, {"0": 1.0, "8": 2.0, "64": 3.0}, "an older calibration")
    cal = calibration.Calibration(lm, cache, int(lm.calibration.fingerprint["threads"]))
    assert not cal.done
    assert cal.run()[0] < 1.0  # measured, not read back


BAD_CONTENTS = {
    "null values": {"grid": list(calibration.CALIBRATED_KS), "costs": {"0": None, "15": None}},
    "zero values": {"grid": list(calibration.CALIBRATED_KS), "costs": {"0": 0, "15": 0}},
    "a list": [1, 2, 3],
    "not json": "{{{",
    "deep nesting": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("what", BAD_CONTENTS)
def test_a_corrupt_cache_file_is_ignored_and_measured_again(cache, tiny_model_dir, what, caplog):
    lm = fresh(tiny_model_dir)
    content = BAD_CONTENTS[what]
    for path in (lm.calibration.path, lm.calibration.learned_path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    cal = calibration.Calibration(lm, cache, int(lm.calibration.fingerprint["threads"]))
    table = cal.run()
    assert table[0] > 0 and all(v > 0 for v in table.values())
    assert model.load_learned(lm) == {}


def test_a_fifo_in_place_of_a_cache_file_never_blocks(cache, tiny_model_dir):
    lm = fresh(tiny_model_dir)
    for path in (lm.calibration.path, lm.calibration.learned_path):
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
    done = threading.Event()

    def read():
        calibration.Calibration(lm, cache, 2).table()
        model.load_learned(lm)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(30), "a reader blocked on the FIFO"


def test_the_fingerprint_tells_cpus_and_instruction_sets_apart(tiny_lm, monkeypatch):
    fp = calibration.fingerprint(tiny_lm, 2)
    assert fp["cpu"] and fp["capability"] and fp["torch"] and fp["transformers"]
    other = "SSE41" if os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2" else "AVX2"  # another cap than now
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", other)
    assert calibration.key_of(calibration.fingerprint(tiny_lm, 2)) != calibration.key_of(fp)
    assert calibration.key_of(calibration.fingerprint(tiny_lm, 1)) != calibration.key_of(fp)


def test_the_cpu_measures_its_precision_once_and_an_explicit_dtype_wins(cache, tiny_model_dir):
    lm = model.load(str(tiny_model_dir), device="cpu", dtype="auto", warm_up=False)
    assert lm.precision in ("float32", "bfloat16", "int8")
    for p in ("float32", "int8", "bfloat16"):
        assert p in lm.reason
    assert set(lm.probe_costs) == {0, 15}
    saved = list((cache / "dtype").glob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["precision"] == lm.precision
    again = model.load(str(tiny_model_dir), device="cpu", dtype=None, warm_up=False)
    assert again.precision == lm.precision and again.reason.endswith("(cached)")
    assert again.probe_costs == lm.probe_costs
    forced = model.load(str(tiny_model_dir), device="cpu", dtype="bf16", warm_up=False)
    assert forced.precision == "bfloat16" and forced.reason == "asked for"


def test_bf16_is_not_even_loaded_where_its_matmuls_are_far_slower(cache, tiny_model_dir, monkeypatch):
    slowdown = precision.bf16_matmul_slowdown(fresh(tiny_model_dir, "bf16").model)
    assert 0 < slowdown < float("inf")
    # A threshold below any measurable slowdown stands for a CPU without bf16 hardware.
    monkeypatch.setattr(precision, "GIVE_UP", slowdown / 1000)
    said: list[str] = []
    lm = model.load(str(tiny_model_dir), device="cpu", dtype="auto", warm_up=False, progress=said.append)
    assert lm.precision in ("float32", "int8")
    assert "bfloat16 given up (its prefill-sized matmul" in lm.reason
    assert sum("as bfloat16" in m for m in said) == 1  # the one load float32 and int8 come from


def test_int8_weights_are_quantized_once_and_read_back(cache, tiny_model_dir):
    first = fresh(tiny_model_dir, "int8")
    layers = [m for m in first.model.modules() if isinstance(m, quant.Int8Linear)]
    assert layers and first.model.get_output_embeddings() in layers  # the head too
    files = list((cache / "quantized").glob("*.int8.safetensors"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    second = fresh(tiny_model_dir, "int8")
    assert files[0].stat().st_mtime_ns == stamp  # read, not written again
    ids = first.encode("def area(self):\n    return")
    kv1, kv2 = model.KVState(), model.KVState()
    assert first.greedy(first.forward(kv1, ids)) == second.greedy(second.forward(kv2, ids))


def test_int8_linear_is_close_to_the_float_layer():
    import torch

    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    q = quant.Int8Linear.quantize(lin)
    x = torch.randn(5, 64)
    ref = lin(x)
    assert (q(x) - ref).abs().max() < 0.02 * ref.abs().max()
    assert not quant.supported(torch.nn.Linear(24, 16))  # shapes the kernel crashes on stay float
    odd = torch.nn.Linear(64, 7)  # rows padded to 16 inside, 7 outputs
    assert (quant.Int8Linear.quantize(odd)(x) - odd(x)).abs().max() < 0.02 * odd(x).abs().max()


def test_idle_work_runs_between_jobs_and_stops_when_done():
    worker = ModelWorker("test-idle")
    try:
        ran: list[str] = []
        left = [5]

        def step() -> bool:
            ran.append("idle")
            time.sleep(0.01)
            left[0] -= 1
            return left[0] > 0

        worker.set_idle(step, quiet_s=0.2)
        fut = worker.submit(("document", "a"), lambda cancel: ran.append("job"))
        fut.result(5)
        deadline = time.monotonic() + 10
        while left[0] > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ran[0] == "job" and ran.count("idle") == 5  # after the job, until done
        worker.submit(("document", "b"), lambda cancel: ran.append("job2")).result(5)
        time.sleep(0.5)
        assert ran[-1] == "job2"  # done: no more idle work
    finally:
        worker.stop()


def test_a_job_waits_for_at_most_the_idle_slice_in_progress():
    worker = ModelWorker("test-idle-2")
    try:
        slices: list[tuple[float, float]] = []

        def step() -> bool:
            t0 = time.monotonic()
            time.sleep(0.05)
            slices.append((t0, time.monotonic()))
            return True  # never done: the job must still get in

        worker.set_idle(step, quiet_s=0.0)
        time.sleep(0.2)
        started: list[float] = []
        worker.submit(("document", "a"), lambda cancel: started.append(time.monotonic())).result(5)
        before = [s for s in slices if s[0] < started[0]]
        assert before and all(end <= started[0] for _, end in before)  # no slice overlaps the job
        assert sum(1 for s in slices if s[0] < started[0] < s[1]) == 0
    finally:
        worker.stop()


def test_int8_is_chosen_only_when_clearly_faster_than_the_best_float_precision():
    from speclsp.local.precision import pick

    assert pick({"float32": 17.0, "int8": 18.6, "bfloat16": 7.6}) == "int8"  # +9%: worth its quality cost
    assert pick({"float32": 16.1, "int8": 27.7, "bfloat16": 27.4}) == "bfloat16"  # +1%: a tie
    assert pick({"float32": 20.0, "int8": 10.0, "bfloat16": 0.0}) == "float32"
