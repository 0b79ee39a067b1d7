"""speclsp's local engine against remote OpenAI-compatible servers, on the same prompts.

    speclsp bench --backend openai --endpoint URL[,URL...] [--remote-model NAME] [--quick]

Systems: the local model (`--model`, default the default model) decoding greedily and with
the workspace drafter and the auto controller over chains (ws:auto) and token trees
(ws:tree), and each endpoint (e.g. one vLLM
serving greedily and one with n-gram speculation; the server's own configuration decides).
Every system completes the same cases (bench/engine.py's: the demo file, a standard-library
file, novel prompts) with the same prompt (speclsp builds it; the remote servers get its
token ids) and the show rules; the local engine starts each from a cold cache, and each
server sees each prompt once, so time to first token includes the whole prefill everywhere.

Reported per system: time to first token and decode tokens/s (median over the cases, and
per case), and, from the typing replay (bench/typing.py: a file typed through the real
language server), the time from a request to the first text the editor could show, and
from the last keystroke of a pause to its first ghost text. A run on one machine measures
that machine: a remote server on its own GPU is the case it is made for (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ..completion.completer import Completer
from ..completion.loader import Choice, load_completer, load_remote
from .engine import Case, cases
from .report import fmt, percentile, write_report


def _systems(args, say: Callable[[str], None]) -> list[tuple[str, Completer, dict[str, Any]]]:
    """(name, completer, request overrides) for the local model and each endpoint."""
    local = load_completer(Choice.of(args, backend="local", draft_model=""), progress=say, calibrate="full")
    out: list[tuple[str, Completer, dict[str, Any]]] = [
        ("local greedy", local, {"speculate": False}),
        ("local ws:auto", local, {"lookahead": "auto"}),
        ("local ws:tree", local, {"lookahead": "tree"}),
    ]
    for url in args.endpoint.split(","):
        remote = load_remote(Choice.of(args, endpoint=url.strip(), draft_model=""), progress=say)
        if remote.problem:
            raise SystemExit(f"speclsp: error: {remote.problem}")
        out.append((f"openai {remote.host} ({remote.name})", Completer(remote), {}))
    return out


def complete_once(completer: Completer, case: Case, max_new: int, overrides: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import replace

    from ..local.backend import LocalBackend

    if isinstance(completer.backend, LocalBackend):
        # A cold cache: the local engine pays the whole prefill, as a server seeing the prompt once does.
        completer.backend.engine.reset()
    comp = completer.complete(replace(case.request(max_new), **overrides))
    s = comp.stats
    return {
        "case": case.name,
        "ttft_ms": round(s.ttft_ms, 1),
        "tokens_per_s": round(s.tokens_per_s, 2),
        "tokens": s.new_tokens,
        "total_ms": round(s.total_ms, 1),
        "text": comp.text,
    }


def typing_replay(args, quick: bool, url: str | None) -> dict[str, Any]:
    from . import typing as typing_bench

    ns = argparse.Namespace(**vars(args))
    if url is None:
        ns.backend, ns.endpoint = "local", None
    else:
        ns.endpoint = url
    return typing_bench.run_for_suite(ns, quick=quick)["summary"]


def main(args) -> dict[str, Any]:
    say = lambda m: print(f"speclsp: {m}", file=sys.stderr)  # noqa: E731
    if not getattr(args, "endpoint", None):
        raise SystemExit("speclsp: error: bench --backend openai needs --endpoint URL[,URL...]")
    quick = getattr(args, "quick", False)
    max_new = 32 if quick else getattr(args, "max_tokens", 96)
    all_cases = cases(quick)
    systems = _systems(args, say)
    rows: dict[str, list[dict[str, Any]]] = {}
    for name, completer, overrides in systems:
        for case in all_cases:
            say(f"{name}: {case.name}")
            rows.setdefault(name, []).append(complete_once(completer, case, max_new, overrides))
    typing: dict[str, dict[str, Any]] = {}
    urls = [None] + [u.strip() for u in args.endpoint.split(",")]
    typing_names = ["local ws:auto"] + [name for name, _, _ in systems[3:]]
    if not getattr(args, "no_typing", False):
        for name, url in zip(typing_names, urls):
            say(f"typing replay: {name}")
            typing[name] = typing_replay(args, quick, url)
    report = {"max_new_tokens": max_new, "cases": [c.name for c in all_cases], "rows": rows, "typing": typing}
    markdown = render(report)
    print(markdown)
    write_report(getattr(args, "out", "bench-out"), "remote", report, markdown)
    return report


def render(report: dict[str, Any]) -> str:
    rows, typing = report["rows"], report["typing"]
    out = [
        f"speclsp local vs remote servers, same prompts, up to {report['max_new_tokens']} tokens, show rules on",
        "",
        "| system | TTFT p50 ms | decode tok/s p50 | typing: request -> first text p50 ms | "
        "typing: pause -> ghost text p50 ms | pauses with text |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, runs in rows.items():
        t = typing.get(name, {})
        share = t.get("pause_text_share")
        out.append(
            f"| {name} | {fmt(percentile([r['ttft_ms'] for r in runs], 0.5))} | "
            f"{fmt(percentile([r['tokens_per_s'] for r in runs], 0.5))} | {fmt(t.get('first_text_p50_ms'))} | "
            f"{fmt(t.get('pause_first_text_p50_ms'))} | {'-' if share is None else f'{share:.0%}'} |"
        )
    out += ["", "| case | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
    for i, case in enumerate(report["cases"]):
        cells = [
            f"{r[i]['ttft_ms']:.0f} ms, {r[i]['tokens_per_s']:.1f} tok/s ({r[i]['tokens']})" for r in rows.values()
        ]
        out.append(f"| {case} | " + " | ".join(cells) + " |")
    same = [
        all(r[i]["text"] == next(iter(rows.values()))[i]["text"] for r in rows.values())
        for i in range(len(report["cases"]))
    ]
    out += [
        "",
        f"cells: TTFT, decode tokens/s (tokens). Same suggestion from every system: {sum(same)}/{len(same)} cases.",
    ]
    return "\n".join(out)
