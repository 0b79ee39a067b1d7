"""`speclsp bench`: the benchmark suite and its report (JSON, Markdown, PNG plots).

Workloads, all with the same model and the same prompts for every system:

- edit-replay   the hunks of real commits of a git repository (`--repo`, default: the
                repository around the current directory): the file as it was around the
                hunk, the commit's other changed files open; the completion is compared
                with what the author wrote (exact characters and lines)
- novel         prompts with little to copy, to show the drafter costs nothing there
- typing-replay a real file typed character by character through the real language
                server over stdio, as an editor sends didChange + inlineCompletion

Systems (engine workloads): plain greedy; transformers `generate(prompt_lookup_num_tokens=10)`;
transformers assisted generation with a draft model when `--draft-model` is given (same
tokenizer, e.g. qwen2.5-coder-0.5b drafting for qwen2.5-coder-1.5b); speclsp with the
workspace drafter and fixed k = 10, the +2/-1 heuristic, and the controller.

Figures: tokens/s, accepted tokens per forward, forwards per token, speedups, time to
first token and to the final token (p50/p95), model calls per keystroke, identical-output
rate, peak memory. Writes `report.json`, `report.md` and `speedup.png`, `latency.png`,
`acceptance.png` under `--out`; prints the Markdown.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

from .engine import cases, history_cases, measure, render
from .report import fmt, local_backend, percentile, summarise, threads, write_report

ENGINE_SYSTEMS = ("greedy", "hf-lookup", "lookup:fixed:10", "ws:fixed:10", "ws:heuristic", "ws:auto", "ws:tree")


def _default_repo() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def latency_table(rows: list[dict]) -> list[dict]:
    """p50/p95 of time to first token and to the final token, per workload and system."""
    out = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        for system in dict.fromkeys(r["system"] for r in rows):
            rs = [r for r in rows if r["kind"] == kind and r["system"] == system]
            ttft = [r["ttft_s"] * 1e3 for r in rs if r["ttft_s"] is not None]
            final = [r["seconds"] * 1e3 for r in rs]
            out.append(
                {
                    "kind": kind,
                    "system": system,
                    "ttft_p50_ms": percentile(ttft, 0.5),
                    "ttft_p95_ms": percentile(ttft, 0.95),
                    "final_p50_ms": percentile(final, 0.5),
                    "final_p95_ms": percentile(final, 0.95),
                }
            )
    return out


def acceptance_by_k(rows: list[dict]) -> dict[str, dict[int, float]]:
    """Per speclsp system: for each draft length k verified, the mean fraction accepted."""
    out: dict[str, dict[int, float]] = {}
    for system in dict.fromkeys(r["system"] for r in rows):
        acc: dict[int, list[float]] = {}
        for r in rows:
            if r["system"] == system and r["steps"]:
                for k, a, *_ in r["steps"]:
                    if k:
                        acc.setdefault(k, []).append(a / k)
        if acc:
            out[system] = {k: sum(v) / len(v) for k, v in sorted(acc.items())}
    return out


def peak_memory_mb(lm) -> dict:
    import torch

    mem = {
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
    }
    if lm.device.type == "cuda":
        mem["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return mem


def plot(report: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    summary = report["summary"]
    kinds = list(summary)
    systems = list(dict.fromkeys(s for per in summary.values() for s in per))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(systems))
    for i, system in enumerate(systems):
        ys = [summary[k].get(system, {}).get("vs_greedy") or 0 for k in kinds]
        ax.bar([x + i * width for x in range(len(kinds))], ys, width, label=system)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks([x + width * (len(systems) - 1) / 2 for x in range(len(kinds))], kinds)
    ax.set_ylabel("speedup vs greedy (tokens/s)")
    ax.set_title(f"{report['model']} on {report['device']} ({report['dtype']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "speedup.png", dpi=110)
    files.append("speedup.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    data, labels = [], []
    for system in systems:
        xs = [r["seconds"] * 1e3 for r in report["rows"] if r["system"] == system]
        if xs:
            data.append(xs)
            labels.append(system)
    ax.boxplot(data, tick_labels=labels, showfliers=True)
    ax.set_ylabel("time to final token (ms)")
    ax.set_yscale("log")
    ax.set_title("latency per completion, all engine workloads")
    plt.setp(ax.get_xticklabels(), rotation=20, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    files.append("latency.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    for system, per_k in report["acceptance_by_k"].items():
        ax.plot(list(per_k), list(per_k.values()), marker="o", label=system)
    ax.set_xlabel("draft tokens verified in one forward (k)")
    ax.set_ylabel("fraction accepted")
    ax.set_ylim(0, 1.05)
    ax.set_title("acceptance vs draft length")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "acceptance.png", dpi=110)
    files.append("acceptance.png")
    plt.close(fig)

    pauses = (report.get("typing") or {}).get("pauses") or []
    if pauses:
        from .typing import plot_pauses

        files.append(plot_pauses(pauses, out))
    return files


def render_suite(report: dict) -> str:
    lines = [
        render(report),
        "",
        "| workload | system | TTFT p50 ms | TTFT p95 ms | final p50 ms | final p95 ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in report["latency"]:
        lines.append(
            f"| {r['kind']} | {r['system']} | {fmt(r['ttft_p50_ms'], 0)} | {fmt(r['ttft_p95_ms'], 0)} | "
            f"{fmt(r['final_p50_ms'], 0)} | {fmt(r['final_p95_ms'], 0)} |"
        )
    t = report.get("typing")
    if t:
        lines += ["", t["markdown"]]
    m = report["memory"]
    lines += ["", "peak memory: " + ", ".join(f"{k} {v}" for k, v in m.items())]
    return "\n".join(lines)


def run_typing(args, quick: bool) -> dict | None:
    """The typing-replay workload through the real server, if its driver is available."""
    try:
        from . import typing as typing_bench
    except ImportError:
        return None
    return typing_bench.run_for_suite(args, quick=quick)


def main(args) -> dict:
    from ..completion.loader import Choice, load_completer

    quick = getattr(args, "quick", False)
    max_new = 32 if quick else getattr(args, "max_tokens", 96)
    say = lambda m: print(f"speclsp: {m}", file=sys.stderr)  # noqa: E731
    t0 = time.perf_counter()
    # With --draft-model, transformers' assisted generation joins as a system.
    completer = load_completer(Choice.of(args), progress=say, calibrate="full")  # calibrate before timing anything
    backend = local_backend(completer)
    lm = backend.lm
    assistant = None
    systems: tuple[str, ...] = ENGINE_SYSTEMS
    if backend.model_drafter is not None:
        assistant = backend.model_drafter.lm
        systems = ("greedy", "hf-lookup", "hf-assisted", *ENGINE_SYSTEMS[2:])
    repo = getattr(args, "repo", None) or _default_repo()
    all_cases = []
    if repo:
        all_cases += history_cases(repo, getattr(args, "commits", 20), 3 if quick else getattr(args, "max_cases", 24))
        say(f"edit-replay: {len(all_cases)} cases from {repo}")
    else:
        say("edit-replay skipped: no --repo and not inside a git repository")
    all_cases += [c for c in cases(quick) if c.kind == "novel"][: 1 if quick else 3]
    rows = measure(completer, all_cases, systems, max_new, max(1, getattr(args, "repeats", 1)), assistant, desc="bench")
    report = {
        "model": lm.name,
        "device": str(lm.device),
        "dtype": lm.precision,
        "draft_model": getattr(args, "draft_model", None),
        "repo": repo,
        "max_new_tokens": max_new,
        "repeats": max(1, getattr(args, "repeats", 1)),
        "threads": threads(),
        "rows": rows,
        "summary": summarise(rows),
        "latency": latency_table(rows),
        "acceptance_by_k": acceptance_by_k(rows),
        "prefix_reuse": [],
    }
    del completer, assistant  # free the model before the server starts its own
    report["typing"] = run_typing(args, quick)
    report["memory"] = peak_memory_mb(lm)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    out = Path(getattr(args, "out", "bench-out"))
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = plot(report, out)
    text = render_suite(report)
    print(text)
    write_report(out, "report", report, text)
    print(f"plots: {', '.join(report['plots'])}", file=sys.stderr)
    return report
