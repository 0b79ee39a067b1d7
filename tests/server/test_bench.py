"""The benchmarks keep working: `speclsp bench --quick` on the tiny model writes its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def git(repo, *args):
    subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        env=dict(
            os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t"
        ),
    )


@pytest.fixture(scope="module")
def history_repo(tmp_path_factory):
    """A small repository with two real-looking commits that add code to existing files."""
    repo = tmp_path_factory.mktemp("repo")
    git(repo, "init", "-q")
    (repo / "shapes.py").write_text("class Circle:\n    def area(self):\n        return 3.14 * self.r ** 2\n")
    (repo / "util.py").write_text("def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    (repo / "shapes.py").write_text(
        "class Circle:\n    def area(self):\n        return 3.14 * self.r ** 2\n\n"
        "    def perimeter(self):\n        return 2 * 3.14 * self.r\n"
    )
    (repo / "util.py").write_text(
        "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n\n\ndef lerp(a, b, t):\n    return a + (b - a) * t\n"
    )
    git(repo, "commit", "-qam", "second")
    (repo / "util.py").write_text(
        "def clamp(x, lo, hi):\n    return lo if x < lo else hi if x > hi else x\n\n\n"
        "def lerp(a, b, t):\n    return a + (b - a) * t\n"
    )
    git(repo, "commit", "-qam", "third: a line rewritten")
    return repo


def test_history_cases_come_from_the_commits_hunks(history_repo):
    from speclsp.bench.history import edit_cases, exact_match

    cases = edit_cases(history_repo, commits=5)
    assert {c.path for c in cases} == {"shapes.py", "util.py"}
    shapes = next(c for c in cases if c.path == "shapes.py")
    assert shapes.expected.startswith("def perimeter(self):")
    assert "def perimeter" not in shapes.text and shapes.text.split("\n")[shapes.line] == "    "
    assert [p for p, _ in shapes.others] == ["util.py"]
    assert exact_match("def perimeter(self):\n        return 0", shapes.expected) == (
        len("def perimeter(self):\n        return ") / len(shapes.expected),
        1,
    )
    # A rewritten line: what the edit took out is what the server would have remembered.
    (rewritten,) = [c for c in cases if c.removed]
    assert rewritten.removed == "    return max(lo, min(x, hi))" and rewritten.expected.startswith("return lo if")
    from speclsp.bench.engine import history_cases

    (case,) = [c for c in history_cases(str(history_repo), 5, 10) if c.history]
    assert case.history == (rewritten.removed,) and case.request(8).history == case.history


def test_bench_quick_writes_json_markdown_and_plots(tiny_model_dir, history_repo, tmp_path):
    out = tmp_path / "report"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "speclsp",
            "bench",
            "--quick",
            "--model",
            str(tiny_model_dir),
            "--dtype",
            "float32",
            "--repo",
            str(history_repo),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    kinds = {row["kind"] for row in report["rows"]}
    assert kinds >= {"edit-replay", "novel"}
    systems = {row["system"] for row in report["rows"]}
    assert systems >= {"greedy", "hf-lookup", "lookup:fixed:10", "ws:fixed:10", "ws:heuristic", "ws:auto", "ws:tree"}
    # lossless: in float32 every speclsp system reproduces greedy exactly
    assert all(row["identical"] for row in report["rows"] if row["system"].startswith("ws:"))
    for png in ("speedup.png", "latency.png", "acceptance.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "| edit-replay | ws:auto |" in md and "TTFT p50" in md
    assert "| workload | system |" in r.stdout  # the table also goes to stdout
    # The typing replay reports what a user feels: the pauses (at least the end of typing).
    pauses = report["typing"]["pauses"]
    assert pauses and pauses[-1]["gap_s"] is None
    assert "last key -> first ghost text in a pause" in md
    assert (out / "pauses.png").read_bytes()[:4] == b"\x89PNG"

    # The GPU profile script (here on the CPU, with a tiny configuration) and the projection
    # of this run's per-step trace onto the costs it measured.
    costs = tmp_path / "costs.json"
    r = subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "gpu-profile.sh"),
            "--device",
            "cpu",
            "--quick",
            "--models",
            "tiny",
            "--repeats",
            "1",
            "--out",
            str(costs),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    table = json.loads(costs.read_text())["models"]["tiny"]
    assert set(table["chain"]["64"]) == set(table["tree"]["64"]) == {"1", "8", "64"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "speclsp",
            "bench",
            "project",
            "--costs",
            str(costs),
            "--report",
            str(out / "report.json"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| edit-replay | ws:tree |" in r.stdout and "| novel | greedy |" in r.stdout
    projected = json.loads((out / "project.json").read_text())["models"]["tiny"]
    assert all(v["tokens_per_s"] > 0 for v in projected.values())


def test_bench_replay_prints_policies_and_bounds(tiny_model_dir, history_repo, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "speclsp",
            "bench",
            "replay",
            "--quick",
            "--model",
            str(tiny_model_dir),
            "--dtype",
            "float32",
            "--repo",
            str(history_repo),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for row in (
        "| edit-replay | chain:auto |",
        "| edit-replay | tree:auto |",
        "| edit-replay | tree:auto+next |",
        "| edit-replay | tree:oracle |",
        "| edit-replay | copy |",
        "| novel | greedy |",
    ):
        assert row in r.stdout, r.stdout
    summary = json.loads((tmp_path / "replay.json").read_text())["summary"]["edit-replay"]["policies"]
    # A bound that knows the future needs no more forwards than greedy, one per token.
    assert summary["copy"]["forwards"] <= summary["greedy"]["forwards"]
    assert summary["tree:oracle"]["forwards"] <= summary["greedy"]["forwards"]


def test_bench_precision_compares_speed_and_quality_across_precisions(tiny_model_dir, history_repo, tmp_path):
    out = tmp_path / "precision"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "speclsp",
            "bench",
            "precision",
            "--quick",
            "--model",
            str(tiny_model_dir),
            "--dtypes",
            "float32,int8",
            "--repo",
            str(history_repo),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "precision.json").read_text())
    f32, i8 = report["precisions"]["float32"], report["precisions"]["int8"]
    assert f32["vs_reference"]["identical"] == f32["vs_reference"]["cases"] > 0  # the reference is itself
    assert 0 <= i8["vs_reference"]["agreement"] <= 1
    for p in (f32, i8):  # speculation is lossless within each precision
        assert all(s["ws:tree"]["identical"] == s["ws:tree"]["cases"] for s in p["summary"].values())
    assert "| int8 | edit-replay |" in r.stdout and "identical to float32" in r.stdout


def test_bench_peers_says_what_it_needs(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "speclsp", "bench", "peers", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "--llama-server PATH" in r.stderr and "scripts/peers.sh llama" in r.stderr
