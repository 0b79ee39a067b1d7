"""`speclsp bench precision`: float32, int8 weights and bfloat16 on this CPU, speed and quality.

    speclsp bench precision [--repo R] [--quick] [--dtypes float32,int8,bfloat16]

For each precision the same model is loaded in this process and runs the engine bench's
cases (bench/engine.py: the demo file, novel prompts, and with `--repo` held-out edits of
real commits) greedily and with speclsp's default speculation (token trees); each is
calibrated first. Reported per precision: decode tokens/s of both, time to first token,
what auto would choose here and why, and the quality cost of a cheaper precision: how
many cases' greedy output is identical to float32's (and the mean share of float32's tokens
reproduced before the first difference), and on edit-replay cases the share of the
author's characters matched from the cursor. Speculation is lossless within a precision
(the `identical` column), not across precisions: that is what the quality columns measure.
"""

from __future__ import annotations

import sys
from typing import Any

from .engine import cases, history_cases, measure
from .report import agreement, fmt, summarise, threads, write_report

SYSTEMS = ("greedy", "ws:tree")


def main(args) -> dict[str, Any]:
    from ..completion.loader import Choice, load_completer
    from ..local import precision as choice

    say = lambda m: print(f"speclsp: {m}", file=sys.stderr)  # noqa: E731
    quick = getattr(args, "quick", False)
    max_new = 48 if quick else getattr(args, "max_tokens", 96)
    dtypes = [d.strip() for d in (getattr(args, "dtypes", None) or "float32,int8,bfloat16").split(",")]
    all_cases = cases(quick)
    if getattr(args, "repo", None):
        all_cases = [c for c in all_cases if c.kind != "edit"] + history_cases(
            args.repo, getattr(args, "commits", 20), 6 if quick else getattr(args, "max_cases", 24)
        )
    per: dict[str, Any] = {}
    greedy_ids: dict[str, dict[str, list[int]]] = {}
    for dtype in dtypes:
        completer = load_completer(Choice.of(args, draft_model="", dtype=dtype), progress=say, calibrate="full")
        rows = measure(
            completer, all_cases, SYSTEMS, max_new, getattr(args, "repeats", 1), desc=f"bench {dtype}", keep_ids=True
        )
        greedy_ids[dtype] = {r["case"]: r["ids"] for r in rows if r["system"] == "greedy"}
        per[dtype] = {
            "summary": summarise(rows),
            "rows": [{k: v for k, v in r.items() if k != "ids"} for r in rows],
            "costs_ms": {k: round(v * 1e3, 1) for k, v in completer.backend.step_costs().items()},
        }
        del completer
    ref = dtypes[0]
    for dtype in dtypes:
        same = [greedy_ids[dtype][c] == greedy_ids[ref][c] for c in greedy_ids[ref]]
        agree = [agreement(greedy_ids[dtype][c], greedy_ids[ref][c]) for c in greedy_ids[ref]]
        per[dtype]["vs_reference"] = {
            "identical": sum(same),
            "cases": len(same),
            "agreement": sum(agree) / len(agree) if agree else None,
        }
    model = getattr(args, "model", None) or ""
    auto = choice.cached_cpu_choice(model or "qwen2.5-coder-0.5b")
    report = {
        "model": model or "default",
        "threads": threads(),
        "reference": ref,
        "max_new_tokens": max_new,
        "auto": list(auto) if auto else None,
        "precisions": per,
    }
    markdown = render(report)
    print(markdown)
    write_report(getattr(args, "out", "bench-out"), "precision", report, markdown)
    return report


def render(report: dict[str, Any]) -> str:
    ref = report["reference"]
    lines = [
        f"precisions on this CPU ({report['threads']} threads), up to {report['max_new_tokens']} tokens, "
        f"quality against {ref} greedy",
        "",
        "| precision | workload | greedy decode tok/s | ws:tree decode tok/s | tree vs greedy "
        "| TTFT ms (greedy, mean) | "
        f"identical to {ref} | agreement with {ref} | author's chars matched | tree lossless |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for dtype, p in report["precisions"].items():
        v = p["vs_reference"]
        for kind, s in p["summary"].items():
            g, t = s["greedy"], s["ws:tree"]
            ttfts = [r["ttft_s"] for r in p["rows"] if r["kind"] == kind and r["system"] == "greedy" and r["ttft_s"]]
            ttft = 1e3 * sum(ttfts) / len(ttfts) if ttfts else None
            exact = g.get("exact_chars")
            lines.append(
                f"| {dtype} | {kind} | {fmt(g['decode_tokens_per_s'], 1)} | {fmt(t['decode_tokens_per_s'], 1)} | "
                f"{fmt(t['decode_vs_greedy'])}x | {fmt(ttft, 0)} | {v['identical']}/{v['cases']} (all) | "
                f"{fmt(v['agreement'])} (all) | {'-' if exact is None else f'{100 * exact:.0f}%'} | "
                f"{t['identical']}/{t['cases']} |"
            )
    lines.append("")
    for dtype, p in report["precisions"].items():
        costs = p["costs_ms"]
        shown = ", ".join(f"k={k} {costs[k]:.0f}" for k in sorted(costs, key=int) if int(k) in (0, 15, 16, 32, 64))
        lines.append(f"- {dtype}: verify pass ms {shown}")
    if report["auto"]:
        lines.append(f"\nauto chooses {report['auto'][0]} here: {report['auto'][1]}")
    return "\n".join(lines)
