"""Property: every read of persistent state tolerates any content.

Whatever bytes sit in a calibration, acceptance, precision-choice or int8-weights cache
file (a crash mid-write, a disk error, a hand edit), reading it never raises and never
yields a value outside what speclsp writes: it is ignored with one warning and measured
again. Generated contents: arbitrary bytes, and JSON of any shape (nulls, lists, deep
nesting, huge and non-finite numbers, wrong types).
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speclsp.drafting.controller import TreeAcceptance
from speclsp.local import calibration, model, precision, quant

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

edges = st.sampled_from([10**400, -(10**400), 0, -1, 1e308, 1e-320, "1e999", "nan", "", True])
scalars = (
    edges
    | st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["0", "15", "prefill", "python|2", "grid", "costs", "precision"]),
            inner,
            max_size=5,
        )
    ),
    max_leaves=30,
)


def dumped(value) -> bytes:
    try:
        return json.dumps(value).encode()  # NaN and infinities as JSON's extensions
    except (ValueError, OverflowError):
        return b"{"


# Shaped like what speclsp writes, each value of any kind: the likeliest corruption.
probe_records = st.fixed_dictionaries({"0": scalars, "15": scalars, "prefill": scalars})
choices = st.fixed_dictionaries(
    {
        "precision": st.sampled_from(["int8", "float32", "bfloat16", "fp8"]) | scalars,
        "reason": scalars,
        "probes": st.dictionaries(
            st.sampled_from(["int8", "float32", "bfloat16"]), probe_records | json_values, max_size=3
        )
        | scalars,
    }
)
tables = st.fixed_dictionaries(
    {
        "grid": st.just(list(calibration.CALIBRATED_KS)) | json_values,
        "costs": st.dictionaries(st.sampled_from(["0", "1", "15", "64", "-1", "x"]), scalars, max_size=6) | json_values,
    }
)
contents = (
    st.binary(max_size=300)
    | json_values.map(dumped)
    | choices.map(dumped)
    | tables.map(dumped)
    | st.integers(1_000, 60_000).map(lambda n: b"[" * n + b"]" * n)
)  # nested too deep


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECLSP_CACHE", str(tmp_path))
    return tmp_path


@PROPERTY
@given(content=contents)
def test_the_cost_table_is_read_back_valid_or_measured_again(tiny_lm, cache, content):
    cal = calibration.Calibration(tiny_lm, cache, 1)
    cal.path.parent.mkdir(parents=True, exist_ok=True)
    cal.path.write_bytes(content)
    again = calibration.Calibration(tiny_lm, cache, 1)
    table = again.table() if again.done else dict(again.lm.step_costs())
    assert table and all(isinstance(k, int) and 0 <= k <= 1024 for k in table)
    assert all(math.isfinite(v) and v > 0 for v in table.values()), table


@PROPERTY
@given(content=contents)
def test_what_the_controller_learnt_is_read_back_as_probabilities_or_nothing(tiny_lm, cache, content):
    path = tiny_lm.calibration.learned_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    try:
        learned = model.load_learned(tiny_lm)
    finally:
        path.unlink()
    assert all(isinstance(k, str) and 0.0 <= v <= 1.0 for k, v in learned.items())
    acceptance = TreeAcceptance()
    acceptance.update(learned)
    assert all(acceptance.floor <= p <= acceptance.ceiling for p in acceptance.to_dict().values())


@PROPERTY
@given(content=contents)
def test_a_cached_precision_choice_is_a_known_precision_or_none(cache, content):
    path, _ = precision._choice_path("some-model")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    got = precision.cached_cpu_choice("some-model")
    assert got is None or (got[0] in precision.CANDIDATES and isinstance(got[1], str))
    saved = calibration.read_json(path)
    probes = saved.get("probes") if isinstance(saved, dict) else None
    for raw in probes.values() if isinstance(probes, dict) else [saved]:
        p = calibration.Probe.from_json(raw)
        assert p is None or (
            set(calibration.PROBE_KS) <= set(p.costs) and math.isfinite(p.prefill_s) and p.prefill_s > 0
        )


@settings(PROPERTY, max_examples=300)
@given(raw=probe_records | json_values)
def test_a_probe_record_parses_to_positive_finite_costs_or_none(raw):
    p = calibration.Probe.from_json(raw)
    assert p is None or (set(calibration.PROBE_KS) <= set(p.costs) and math.isfinite(p.prefill_s) and p.prefill_s > 0)
    costs = calibration.parse_costs(raw)
    assert all(isinstance(k, int) and math.isfinite(v) and v > 0 for k, v in costs.items())


@settings(PROPERTY, max_examples=12)
@given(content=st.binary(max_size=400) | st.sampled_from(["shape", "dtype", "truncated"]))
def test_cached_int8_weights_are_used_only_when_they_fit_the_model(tiny_model_dir, cache, content):
    lm = model.load(str(tiny_model_dir), device="cpu", dtype="float32", warm_up=False)
    path = quant.cache_file(cache, str(tiny_model_dir))
    reference = model.load(str(tiny_model_dir), device="cpu", dtype="float32", warm_up=False)
    quant.quantize(reference.model, path)  # a good cache file, then spoilt
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(path))
        name = next(k for k in tensors if k.endswith(".qweight"))
        t = tensors[name]
        tensors[name] = t[:-16] if content == "shape" else t.float()
        save_file(tensors, str(path))
    quant.quantize(lm.model, path)
    ids = lm.encode("def f(x):\n    return x\n")
    from speclsp.local.model import KVState

    got = lm.greedy(lm.forward(KVState(), ids))
    want = reference.greedy(reference.forward(KVState(), ids))
    assert got == want  # quantized again from the weights: the same int8 model
