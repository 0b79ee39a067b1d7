"""What every benchmark shares: number formatting, summaries, and writing reports.

A benchmark prints a Markdown table to stdout and writes the same figures as JSON (and,
for the suite, plots) under `--out`; progress goes to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..completion.completer import Completer
    from ..local.backend import LocalBackend


def local_backend(completer: Completer) -> LocalBackend:
    """`completer`'s backend, which these benchmarks need local (its model and engine)."""
    from ..local.backend import LocalBackend

    backend = completer.backend
    assert isinstance(backend, LocalBackend), f"this benchmark needs the local backend, not {backend!r}"
    return backend


def fmt(x, nd=2):
    return "–" if x is None else f"{x:.{nd}f}"


def times(x) -> str:
    """A ratio as "1.23x", or "–" where there is none."""
    return "–" if x is None else f"{x:.2f}x"


def threads() -> int:
    import torch

    return torch.get_num_threads()


def agreement(ids, base):
    """Fraction of greedy's tokens reproduced before the first difference."""
    n = 0
    while n < min(len(ids), len(base)) and ids[n] == base[n]:
        n += 1
    return n / len(base) if base else 1.0


def ratio(a, b):
    return a / b if a is not None and b else None


def summarise(rows):
    """Per (kind, system): total tokens / total seconds, and speedups on that basis."""
    out = {}
    for kind in sorted({r["kind"] for r in rows}):
        per = {}
        for system in dict.fromkeys(r["system"] for r in rows):
            rs = [r for r in rows if r["kind"] == kind and r["system"] == system]
            toks, secs, fw = sum(r["tokens"] for r in rs), sum(r["seconds"] for r in rs), sum(r["forwards"] for r in rs)
            dr = sum(r["drafted"] or 0 for r in rs)
            ac = sum(r["accepted"] or 0 for r in rs)
            # Decode: the tokens after the first over the time after the first token (the
            # prefill is the same work for every system); only where the first token's time is known.
            timed = [r for r in rs if r.get("ttft_s") is not None]
            dsecs = sum(r["seconds"] - r["ttft_s"] for r in timed)
            decode = (
                sum(r["tokens"] - 1 for r in timed) / dsecs if timed and len(timed) == len(rs) and dsecs > 0 else None
            )
            per[system] = {
                "tokens_per_s": toks / secs if secs else 0.0,
                "decode_tokens_per_s": decode,
                "forwards_per_token": fw / toks if toks else None,
                "accepted_per_forward": ac / fw if fw and not system.startswith(("greedy", "hf-")) else None,
                # drafted tokens, or tree nodes, sent to each verify pass
                "verified_per_forward": dr / fw if fw and not system.startswith(("greedy", "hf-")) else None,
                "acceptance": ac / dr if dr else None,
                "identical": sum(r["identical"] for r in rs),
                "cases": len(rs),
            }
            qs = [r["quality"] for r in rs if r["quality"]]
            if qs:
                per[system]["exact_chars"] = sum(q["exact_chars"] for q in qs) / len(qs)
                per[system]["exact_lines"] = sum(q["exact_lines"] for q in qs) / sum(q["expected_lines"] for q in qs)
        for system in per:
            per[system]["vs_greedy"] = ratio(per[system]["tokens_per_s"], per["greedy"]["tokens_per_s"])
            per[system]["vs_hf_lookup"] = ratio(
                per[system]["tokens_per_s"], per.get("hf-lookup", {}).get("tokens_per_s")
            )
            per[system]["vs_ws_auto"] = ratio(per[system]["tokens_per_s"], per.get("ws:auto", {}).get("tokens_per_s"))
            per[system]["decode_vs_ws_auto"] = ratio(
                per[system]["decode_tokens_per_s"], per.get("ws:auto", {}).get("decode_tokens_per_s")
            )
            per[system]["decode_vs_greedy"] = ratio(
                per[system]["decode_tokens_per_s"], per["greedy"].get("decode_tokens_per_s")
            )
        out[kind] = per
    return out


def percentile(xs: list[float], q: float) -> float | None:
    """The q-quantile of `xs` (nearest rank), None if empty."""
    if not xs:
        return None
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))
    return xs[i]


def write_report(out: str | Path, name: str, report: dict[str, Any], markdown: str | None = None) -> Path:
    """Write `report` as `out/name.json` (and `markdown` as `out/name.md`); say where on stderr."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(report, indent=2))
    if markdown is not None:
        (folder / f"{name}.md").write_text(markdown + "\n")
    print(f"\nreport: {path}", file=sys.stderr)
    return path
