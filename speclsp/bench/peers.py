"""`speclsp bench peers`: speclsp's default configuration against llama.cpp, same prompts.

    speclsp bench peers --llama-server PATH [--gguf FILE] [--threads 1,2] [--repo R] [--quick]

What a user without a GPU would otherwise run is llama.cpp's `llama-server` (llama.vscode
talks to it), serving the very GGUF file speclsp's default model is converted from. This
starts it (once greedy, once with each n-gram speculation mode given by `--llama-modes`) on
loopback, at each thread count, beside this process's model at the same thread count, and
sends every system the same prompts: the FIM prompt speclsp builds at each case's cursor,
as token ids, so both tokenize nothing of their own. Every system generates up to the same
number of tokens, with no stop rule; speclsp from a cold cache, llama-server with its own
prompt cache as it runs by default (which can only shorten its time to first token on cases
that share a file's start; decode speed is unaffected). Reported per system and thread count: median
decode tokens/s after the first token (the speed of ghost text growing), median time to first token, and the ratio
to llama.cpp's best n-gram mode. The systems go round in turn case by case, so a burst of
load from another process slows one run of several systems, not every run of one.

The local systems are speclsp greedy and speclsp's default (token trees, the controller,
the workspace drafter) in the precision the default chooses on this CPU; `--baseline-dtype
bfloat16` adds greedy in another precision (the default before precisions were measured).
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..completion.completer import Completer
from ..completion.loader import Choice, load_completer, load_remote
from .engine import Case, cases, history_cases
from .report import local_backend, write_report

LLAMA_MODES = {
    "greedy": [],
    "ngram-simple": ["--spec-type", "ngram-simple"],
    "ngram-mod": ["--spec-type", "ngram-mod"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def llama_server(
    binary: str, gguf: str, threads: int, extra: list[str], log: Path, say: Callable[[str], None]
) -> Iterator[str]:
    """A llama-server on loopback for the duration; yields its /v1 endpoint."""
    port = free_port()
    cmd = [
        binary,
        "-m",
        gguf,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "-c",
        "8192",
        "-np",
        "1",
        "--poll",
        "0",
        *extra,
    ]  # --poll 0: no busy-waiting while another system runs
    say(f"starting {' '.join(cmd[1:])}")
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"speclsp: error: llama-server exited with {proc.returncode} (log: {log})")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"speclsp: error: llama-server not ready in 180 s (log: {log})")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_local(completer: Completer, prompt_ids: Sequence[int], req, max_new: int, speculate: bool) -> dict[str, Any]:
    engine = local_backend(completer).engine
    engine.reset()
    if speculate:
        r = engine.generate(
            prompt_ids,
            max_new_tokens=max_new,
            drafter=completer.drafter_for(req),
            policy=completer.policy_for(req.lookahead),
        )
    else:
        r = engine.generate(prompt_ids, max_new_tokens=max_new)
    return _row(r)


def run_remote(remote: Any, prompt_ids: Sequence[int], max_new: int) -> dict[str, Any]:
    return _row(remote.generate(prompt_ids, max_new_tokens=max_new))


def _row(r) -> dict[str, Any]:
    s = r.stats
    return {
        "tokens": s.new_tokens,
        "ttft_ms": s.ttft_ms,
        "decode_tps": s.tokens_per_s,
        "forwards": s.forwards,
        "ids": list(r.token_ids),
    }


def main(args) -> dict[str, Any]:
    import torch

    from ..local import registry

    say = lambda m: print(f"speclsp: {m}", file=sys.stderr)  # noqa: E731
    binary = getattr(args, "llama_server", None)
    if not binary or not Path(binary).is_file():
        raise SystemExit(
            "speclsp: error: bench peers needs --llama-server PATH (bash scripts/peers.sh llama prints it)"
        )
    model = getattr(args, "model", None) or registry.DEFAULT_MODEL
    gguf = getattr(args, "gguf", None) or str(registry.gguf(model, progress=say))
    quick = getattr(args, "quick", False)
    max_new = 48 if quick else getattr(args, "max_tokens", 96)
    thread_counts = [int(t) for t in str(getattr(args, "threads", None) or "1,2").split(",")]
    modes = [m for m in str(getattr(args, "llama_modes", None) or "greedy,ngram-simple,ngram-mod").split(",")]
    out_dir = Path(getattr(args, "out", "bench-out"))
    out_dir.mkdir(parents=True, exist_ok=True)
    completer = load_completer(Choice.of(args, draft_model=""), progress=say, calibrate="full")
    baseline = None
    if getattr(args, "baseline_dtype", None):
        baseline = load_completer(Choice.of(args, draft_model="", dtype=args.baseline_dtype), progress=say)
    all_cases: list[Case] = cases(quick)
    if getattr(args, "repo", None):
        all_cases = [c for c in all_cases if c.kind != "edit"] + history_cases(
            args.repo, getattr(args, "commits", 20), 6 if quick else getattr(args, "max_cases", 24)
        )
    prompts = []
    for case in all_cases:
        req = case.request(max_new)
        prompts.append((case, req, completer.prompt_for(req)[0].ids))
    dtype = completer.backend.dtype
    rows: list[dict[str, Any]] = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        systems: list[tuple[str, Callable[[Any, Sequence[int]], dict[str, Any]]]] = [
            (f"speclsp greedy ({dtype})", lambda req, ids: run_local(completer, ids, req, max_new, False)),
            (
                f"speclsp default: {req_lookahead(prompts)} ({dtype})",
                lambda req, ids: run_local(completer, ids, req, max_new, True),
            ),
        ]
        if baseline is not None:
            systems.append(
                (
                    f"speclsp greedy ({baseline.backend.dtype})",
                    lambda req, ids: run_local(baseline, ids, req, max_new, False),
                )
            )
        with _servers(binary, gguf, threads, modes, out_dir, say, model) as remotes:
            for mode, remote in remotes:

                def on_remote(req: Any, ids: Sequence[int], r: Any = remote) -> dict[str, Any]:
                    return run_remote(r, ids, max_new)

                systems.append((f"llama.cpp {mode}", on_remote))
            for case, req, ids in prompts:
                for name, run in systems:
                    say(f"{threads} thread(s): {case.name}: {name}")
                    row = run(req, ids)
                    row.update(case=case.name, kind=case.kind, system=name, threads=threads, prompt_tokens=len(ids))
                    rows.append(row)
    report = {
        "model": model,
        "gguf": Path(gguf).name,
        "dtype": dtype,
        "dtype_reason": completer.backend.dtype_reason,
        "cpu_profile": _profile(),
        "max_new_tokens": max_new,
        "cases": [c.name for c in all_cases],
        "rows": [{k: v for k, v in r.items() if k != "ids"} for r in rows],
        "summary": summarise(rows),
    }
    markdown = render(report)
    print(markdown)
    write_report(str(out_dir), "peers", report, markdown)
    return report


def req_lookahead(prompts) -> str:
    return prompts[0][1].lookahead if prompts else "tree"


@contextmanager
def _servers(binary, gguf, threads, modes, out_dir, say, model) -> Iterator[list[tuple[str, Any]]]:
    from contextlib import ExitStack

    with ExitStack() as stack:
        remotes = []
        for mode in modes:
            if mode not in LLAMA_MODES:
                raise SystemExit(f"speclsp: error: unknown llama mode {mode!r}: {', '.join(LLAMA_MODES)}")
            url = stack.enter_context(
                llama_server(
                    binary, gguf, threads, LLAMA_MODES[mode], out_dir / f"llama-server-{mode}-t{threads}.log", say
                )
            )
            remote = load_remote(Choice(model=model, backend="openai", endpoint=url), progress=say)
            stack.callback(remote.close)
            remotes.append((mode, remote))
        yield remotes


def _profile() -> str:
    import os

    import torch

    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{torch.backends.cpu.get_cpu_capability()}" + (f" (oneDNN capped at {isa})" if isa else "")


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per "threads|system": median decode tok/s and TTFT over the cases."""
    out: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys(f"{r['threads']}|{r['system']}" for r in rows):
        t, system = key.split("|", 1)
        mine = [r for r in rows if r["threads"] == int(t) and r["system"] == system]
        out[key] = {
            "threads": int(t),
            "system": system,
            "cases": len(mine),
            "decode_tps": statistics.median(r["decode_tps"] for r in mine),
            "ttft_ms": statistics.median(r["ttft_ms"] for r in mine),
            "tokens": sum(r["tokens"] for r in mine),
        }
    for t in {s["threads"] for s in out.values()}:
        peers = [s for s in out.values() if s["threads"] == t and s["system"].startswith("llama.cpp ngram")]
        best = max(peers, key=lambda s: s["decode_tps"]) if peers else None
        for s in out.values():
            if s["threads"] == t and best:
                s["vs_best_llama_ngram"] = s["decode_tps"] / best["decode_tps"] if best["decode_tps"] else None
    return out


def render(report: dict[str, Any]) -> str:
    lines = [
        f"speclsp vs llama.cpp llama-server: {report['model']} ({report['gguf']} for llama.cpp; speclsp in "
        f"{report['dtype']}), CPU {report['cpu_profile']}, up to {report['max_new_tokens']} tokens per case, "
        f"{len(report['cases'])} cases, no stop rule, speclsp from a cold cache",
        "",
        "| threads | system | decode tok/s (median) | vs best llama.cpp n-gram | TTFT ms (median) | tokens |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for s in report["summary"].values():
        ratio = s.get("vs_best_llama_ngram")
        lines.append(
            f"| {s['threads']} | {s['system']} | {s['decode_tps']:.1f} | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'} | {s['ttft_ms']:.0f} | {s['tokens']} |"
        )
    lines += [
        "",
        f"speclsp's precision: {report['dtype']} ({report['dtype_reason']})",
        "",
        "| threads | case | " + " | ".join(dict.fromkeys(r["system"] for r in report["rows"])) + " |",
    ]
    systems = list(dict.fromkeys(r["system"] for r in report["rows"]))
    lines.append("|---:|---|" + "---:|" * len(systems))
    for t in dict.fromkeys(r["threads"] for r in report["rows"]):
        for case in report["cases"]:
            cells = []
            for system in systems:
                r = next(
                    (r for r in report["rows"] if r["threads"] == t and r["case"] == case and r["system"] == system),
                    None,
                )
                cells.append("-" if r is None else f"{r['decode_tps']:.1f} ({r['tokens']})")
            lines.append(f"| {t} | {case} | " + " | ".join(cells) + " |")
    lines += ["", "cells: decode tokens/s after the first token (tokens generated)."]
    return "\n".join(lines)
