"""`speclsp bench project --costs FILE`: predicted tokens/s on another device.

Replays the per-step trace of a CPU run of `speclsp bench engine` (or the suite: its
engine report) with the verify costs measured elsewhere (`scripts/gpu-profile.sh` writes
them): each system's verify passes keep their sizes (chain tokens or tree nodes) and what
they accepted, which depend on the model and the drafts, not on the device; only what a
pass costs changes. Prefill is predicted from the measured prefill speed. Acceptance comes
from the model of the CPU run: for the 1.5B model, project a 1.5B run.
"""

from __future__ import annotations

import bisect
import json
import sys
from pathlib import Path

from .report import fmt, ratio


class Costs:
    """Seconds of one verify pass over the pending token and n drafted ones (a chain, or a
    tree of n nodes) after about `ctx` cached tokens: the nearest measured context,
    interpolated between measured sizes."""

    def __init__(self, table: dict):
        self.prefill = {int(c): float(v) for c, v in table["prefill_tok_s"].items()}
        self.kinds = {
            kind: {int(c): {int(n): float(s) for n, s in per.items()} for c, per in table[kind].items()}
            for kind in ("chain", "tree")
        }

    @staticmethod
    def _nearest(keys, x):
        keys = sorted(keys)
        i = bisect.bisect_left(keys, x)
        return keys[min(i, len(keys) - 1)]

    def verify(self, kind: str, ctx: int, n: int) -> float:
        per = self.kinds[kind][self._nearest(self.kinds[kind], ctx)]
        ns = sorted(per)
        if n <= ns[0]:
            return per[ns[0]]
        i = bisect.bisect_left(ns, n)
        if i == len(ns):
            i -= 1
        n0, n1 = ns[i - 1], ns[i]
        return per[n0] + (per[n1] - per[n0]) * (n - n0) / (n1 - n0)

    def prefill_s(self, tokens: int) -> float:
        return tokens / self.prefill[self._nearest(self.prefill, tokens)]


def predict(row: dict, costs: Costs) -> float:
    """Predicted seconds for one (case, system) row of an engine report."""
    ctx = row["prompt_tokens"]
    t = costs.prefill_s(ctx)
    if row["steps"] is None:  # transformers' prompt lookup: 10 drafted tokens per forward
        return t + max(0, row["forwards"] - 1) * costs.verify("chain", ctx, 10)
    for k, _accepted, *tree in row["steps"]:  # a pass over the pending token + k drafted
        t += costs.verify("tree" if tree and tree[0] else "chain", ctx, k)
    return t


def main(args) -> dict:
    costs_file = getattr(args, "costs", None)
    if not costs_file:
        raise SystemExit("speclsp bench project: --costs FILE (from scripts/gpu-profile.sh) is required")
    report_path = Path(getattr(args, "report", None) or Path(getattr(args, "out", "bench-out")) / "engine.json")
    table = json.loads(Path(costs_file).read_text())
    report = json.loads(report_path.read_text())
    rows = report["rows"]
    out = {
        "costs": str(costs_file),
        "device": table.get("device"),
        "trace": str(report_path),
        "trace_model": report.get("model"),
        "models": {},
    }
    lines = [
        f"predicted on {table.get('device')} from the per-step trace of {report.get('model')} on "
        f"{report.get('device')} ({report_path})",
        "",
    ]
    for name, per_model in table["models"].items():
        costs = Costs(per_model)
        summary: dict[tuple[str, str], list[float]] = {}
        for r in rows:
            s = predict(r, costs)
            acc = summary.setdefault((r["kind"], r["system"]), [0.0, 0.0])
            acc[0] += r["tokens"]
            acc[1] += s
        result = {f"{k}|{s}": {"tokens_per_s": v[0] / v[1] if v[1] else 0.0} for (k, s), v in summary.items()}
        out["models"][name] = result
        lines += [
            f"### costs of {name}",
            "",
            "| workload | system | predicted tokens/s | vs greedy | vs hf-lookup |",
            "|---|---|---:|---:|---:|",
        ]
        for (kind, system), v in summary.items():
            tps = v[0] / v[1] if v[1] else 0.0
            g = result.get(f"{kind}|greedy", {}).get("tokens_per_s")
            h = result.get(f"{kind}|hf-lookup", {}).get("tokens_per_s")
            lines.append(f"| {kind} | {system} | {tps:.1f} | {fmt(ratio(tps, g))}x | {fmt(ratio(tps, h))}x |")
        lines.append("")
    print("\n".join(lines))
    dest = Path(getattr(args, "out", "bench-out")) / "project.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2))
    print(f"\nreport: {dest}", file=sys.stderr)
    return out
