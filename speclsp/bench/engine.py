"""`speclsp bench engine`: this engine against plain greedy and transformers' prompt lookup.

One process, one model, the same prompts for every system:

- greedy            the engine with no drafts (one token per forward): the baseline
- hf-lookup         transformers `generate(prompt_lookup_num_tokens=10)`
- lookup:fixed:10   this engine, prompt-lookup drafter (the prompt only), 10 tokens per step
- ws:fixed:10       workspace n-gram drafter (open documents + prompt + generated), k = 10
- ws:heuristic      same drafter, transformers' +2/-1 schedule
- ws:auto           same drafter, the cost-aware lookahead controller
- ws:tree           same index, token trees: every candidate continuation in one trie, the
                    controller's choice of its nodes verified in one forward (tree mask)

Prompts are FIM prompts built the way the server builds them, at real cursor positions:
code-editing cases (continuing a file whose structure repeats, or with `--repo`, the hunks
of real commits with the commit's other files open) and novel cases (little to copy).
Greedy runs first with the show rules and sets the number of tokens N every other system
then generates, so all do the same work; outputs are compared token for token. A second
table shows time to first token for a request that extends the previous prompt by a few
characters (prefix reuse) against the same request cold. Prints Markdown tables, writes JSON.
"""

from __future__ import annotations

import statistics
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from ..completion.completer import Completer, CompletionRequest
from ..completion.context import OpenDocument
from ..drafting.drafter import PromptLookupDrafter
from ..drafting.folders import worth_remembering
from .report import agreement, fmt, local_backend, ratio, summarise, threads, times, write_report

SYSTEMS = ("greedy", "hf-lookup", "lookup:fixed:10", "ws:fixed:10", "ws:heuristic", "ws:auto", "ws:tree")


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "edit" or "novel"
    path: str
    text: str
    line: int
    character: int
    others: tuple[OpenDocument, ...] = ()
    expected: str | None = None  # what the author wrote (history cases)
    history: tuple[str, ...] = ()  # what the server would remember: the text the edit removed

    def request(self, max_new: int) -> CompletionRequest:
        return CompletionRequest(
            self.path, self.text, self.line, self.character, self.others, max_tokens=max_new, history=self.history
        )


def history_cases(repo: str, commits: int, max_cases: int) -> list[Case]:
    from .history import edit_cases

    return [
        Case(
            f"{c.name}",
            "edit-replay",
            c.path,
            c.text,
            c.line,
            c.character,
            tuple(OpenDocument(p, t) for p, t in c.others),
            c.expected,
            (c.removed,) if worth_remembering(c.removed) else (),
        )
        for c in edit_cases(repo, commits=commits, max_cases=max_cases)
    ]


def _cursor_at_def(path: Path, nth_from_end: int = 1) -> Case | None:
    """Cursor at the end of the signature line of a method late in a real file."""
    text = path.read_text()
    lines = text.split("\n")
    defs = [i for i, s in enumerate(lines) if s.startswith("    def ") and s.rstrip().endswith(":")]
    if len(defs) < nth_from_end + 3:
        return None
    i = defs[-nth_from_end]
    return Case(f"edit:{path.name}", "edit", str(path), "\n".join(lines[: i + 1]) + "\n", i, len(lines[i]))


def cases(quick: bool) -> list[Case]:
    from ..data import demo_path

    demo = demo_path()
    text = demo.read_text()
    i = text[: text.rindex("    def area(self):")].count("\n")
    out = [Case("edit:demo_file.py", "edit", str(demo), text, i, len("    def area(self):"))]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for rel in ("unittest/case.py", "json/encoder.py", "fractions.py")[: 1 if quick else 3]:
        c = _cursor_at_def(stdlib / rel, nth_from_end=3)
        if c:
            out.append(c)
    novel = [
        ("novel:fib", "def fibonacci(n):\n    "),
        ("novel:csv", "import csv\n\n\ndef average_of_column(path, column):\n    "),
        ("novel:http", "# A tiny HTTP health checker\nimport urllib.request\n\n\ndef check(url, timeout=2.0):\n    "),
    ]
    for name, src in novel[: 1 if quick else 3]:
        lines = src.split("\n")
        out.append(Case(name, "novel", f"{name[6:]}.py", src, len(lines) - 1, len(lines[-1])))
    return out


class ForwardCounter:
    """Counts forward calls of a torch module (to report transformers' forwards)."""

    def __init__(self, module):
        self.n = 0
        self._h = module.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.n += 1

    def close(self):
        self._h.remove()


@dataclass
class Run:
    """One system on one prompt."""

    ids: list[int]
    seconds: float
    forwards: int
    ttft_s: float | None = None  # None where transformers gives no way to see it
    drafted: int | None = None
    accepted: int | None = None
    text: str | None = None
    # Per verify pass: (k or tree nodes, accepted, 1 if a tree); bench draft keeps (k, accepted).
    steps: list[tuple[int, ...]] | None = None


def run_hf(lm, prompt_ids, max_new, **generate_kwargs) -> Run:
    """transformers' own generate (prompt lookup, or assisted generation with a draft model)."""
    import torch

    x = torch.tensor([list(prompt_ids)], device=lm.device)
    counter = ForwardCounter(lm.model)
    lm.sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = lm.model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=sorted(lm.end_ids),
            pad_token_id=sorted(lm.end_ids)[0],
            **generate_kwargs,
        )
    lm.sync()
    dt = time.perf_counter() - t0
    counter.close()
    ids = out[0, len(prompt_ids) :].tolist()
    while ids and ids[-1] in lm.end_ids:
        ids.pop()
    return Run(ids, dt, counter.n)


def run_system(
    completer: Completer, system: str, req: CompletionRequest, prompt_ids, max_new, stop_text=None, assistant=None
) -> Run:
    """Run one system on one prompt, from a cold cache (every system pays the same prefill)."""
    backend = local_backend(completer)
    if system == "hf-lookup":
        return run_hf(backend.lm, prompt_ids, max_new, prompt_lookup_num_tokens=10)
    if system == "hf-assisted":
        # transformers' assisted generation with its defaults (5.23: 20 draft tokens,
        # constant schedule, drafting stops below confidence 0.4).
        return run_hf(backend.lm, prompt_ids, max_new, assistant_model=assistant.model)
    engine = backend.engine
    engine.reset()
    if system == "greedy":
        r = engine.generate(prompt_ids, max_new_tokens=max_new, stop_text=stop_text)
    else:
        drafter_kind, lookahead = system.split(":", 1)
        drafter = PromptLookupDrafter() if drafter_kind == "lookup" else completer.drafter_for(req)
        r = engine.generate(
            prompt_ids,
            max_new_tokens=max_new,
            drafter=drafter,
            policy=completer.policy_for(lookahead),
            stop_text=stop_text,
        )
    s = r.stats
    return Run(
        r.token_ids,
        s.total_ms / 1e3,
        s.forwards + s.prefill_forwards,
        s.ttft_ms / 1e3,
        s.drafted,
        s.accepted,
        r.text,
        [(st.k, st.accepted, int(st.depth > 0)) for st in r.steps],
    )


def measure(
    completer: Completer,
    all_cases: list[Case],
    systems: tuple[str, ...],
    max_new: int,
    repeats: int = 1,
    assistant=None,
    desc: str = "bench",
    keep_ids: bool = False,
) -> list[dict]:
    """Every system on every case; one row per (case, system).

    `systems` starts with "greedy": its output, cut where the suggestion ends, fixes how many
    tokens the others generate. Each system's time is the best of `repeats` runs, and the
    repeats go round the systems in turn (greedy, A, B, greedy, A, B, ...): a burst of
    load from another process then slows one run of several systems, not every run of one.
    """
    from tqdm import tqdm

    if systems[0] != "greedy":
        raise ValueError("the systems start with greedy (it fixes the number of tokens)")
    rows = []
    with tqdm(total=len(all_cases) * len(systems) * repeats, desc=desc, file=sys.stderr) as bar:
        for case in all_cases:
            req = case.request(max_new)
            prompt, rules = completer.prompt_for(req)
            runs: dict[str, list[Run]] = {s: [] for s in systems}
            n = max_new
            for _ in range(repeats):
                for system in systems:
                    bar.set_postfix_str(f"{case.name} {system}")
                    # Greedy ends where the suggestion ends (show rules) and fixes N for the rest.
                    stop = rules.cut if system == "greedy" else None
                    runs[system].append(run_system(completer, system, req, prompt.ids, n, stop, assistant))
                    if system == "greedy":
                        n = max(1, len(runs[system][0].ids))
                    bar.update(1)
            # The outputs are deterministic, the timing is not: the fastest run of each.
            results = {s: min(rs, key=lambda r: r.seconds) for s, rs in runs.items()}
            base = results["greedy"]
            quality = None
            if case.expected is not None:
                from .history import exact_match

                chars, lines = exact_match(rules.finalize(base.text or ""), case.expected)
                quality = {"exact_chars": chars, "exact_lines": lines, "expected_lines": case.expected.count("\n") + 1}
            for system, r in results.items():
                n = len(r.ids)
                rows.append(
                    {
                        "case": case.name,
                        "kind": case.kind,
                        "system": system,
                        "prompt_tokens": len(prompt.ids),
                        "tokens": n,
                        "seconds": r.seconds,
                        "ttft_s": r.ttft_s,
                        "tokens_per_s": n / r.seconds if r.seconds else 0.0,
                        "forwards": r.forwards,
                        "forwards_per_token": r.forwards / n if n else None,
                        "drafted": r.drafted,
                        "accepted": r.accepted,
                        "acceptance": (r.accepted / r.drafted) if r.accepted is not None and r.drafted else None,
                        "accepted_per_forward": (r.accepted / r.forwards)
                        if r.accepted is not None and r.forwards
                        else None,
                        "identical": r.ids == base.ids,
                        "agreement": agreement(r.ids, base.ids),
                        "quality": quality,
                        "steps": r.steps,
                        **({"ids": r.ids} if keep_ids else {}),  # to compare runs (bench precision)
                    }
                )
    return rows


def prefix_reuse(completer: Completer, case: Case, repeats: int = 3) -> dict:
    """TTFT of a request extending the previous one by a few characters, warm vs cold."""
    engine = local_backend(completer).engine
    req = CompletionRequest(case.path, case.text, case.line, case.character, max_tokens=1)
    p1, _ = completer.prompt_for(req)
    typed = case.text.split("\n")
    typed[case.line] += "\n        ret"  # the user types a few characters
    text2 = "\n".join(typed)
    req2 = CompletionRequest(case.path, text2, case.line + 1, len("        ret"), max_tokens=1)
    p2, _ = completer.prompt_for(req2)
    warm, cold, reused = [], [], 0
    for _ in range(repeats):
        engine.reset()
        engine.generate(p1.ids, max_new_tokens=1)
        r = engine.generate(p2.ids, max_new_tokens=1)
        warm.append(r.stats.ttft_ms)
        reused = r.stats.reused_tokens
        engine.reset()
        cold.append(engine.generate(p2.ids, max_new_tokens=1).stats.ttft_ms)
    return {
        "case": case.name,
        "prompt_tokens": len(p2.ids),
        "reused_tokens": reused,
        "cold_ttft_ms": statistics.median(cold),
        "warm_ttft_ms": statistics.median(warm),
        "speedup": ratio(statistics.median(cold), statistics.median(warm)),
    }


def main(args) -> dict:
    from ..completion.loader import Choice, load_completer

    quick = getattr(args, "quick", False)
    max_new = 48 if quick else getattr(args, "max_tokens", 96)
    repeats = max(1, getattr(args, "repeats", 1))
    completer = load_completer(
        Choice.of(args, draft_model=""), progress=lambda m: print(f"speclsp: {m}", file=sys.stderr), calibrate="full"
    )  # calibrate before timing anything
    lm = local_backend(completer).lm
    all_cases = cases(quick)
    if getattr(args, "repo", None):
        all_cases = [c for c in all_cases if c.kind != "edit"] + history_cases(
            args.repo, getattr(args, "commits", 20), 6 if quick else getattr(args, "max_cases", 24)
        )
    rows = measure(completer, all_cases, SYSTEMS, max_new, repeats, desc="bench engine")
    summary = summarise(rows)
    reuse = [prefix_reuse(completer, c) for c in all_cases if c.kind != "novel"][:2]
    report = {
        "model": lm.name,
        "device": str(lm.device),
        "dtype": lm.precision,
        "max_new_tokens": max_new,
        "repeats": repeats,
        "threads": threads(),
        "rows": rows,
        "summary": summary,
        "prefix_reuse": reuse,
    }
    print(render(report))
    write_report(getattr(args, "out", "bench-out"), "engine", report)
    return report


def render(report) -> str:
    lines = [
        f"model {report['model']} on {report['device']} ({report['dtype']}, {report['threads']} threads), "
        f"{report['max_new_tokens']} new tokens max, best of {report['repeats']} run(s); "
        "tokens/s includes the prefill, decode tok/s is after the first token",
        "",
    ]
    lines.append(
        "| workload | system | tokens/s | accepted/forward | verified/forward | forwards/token | acceptance | "
        "vs greedy | vs hf-lookup | vs ws:auto | decode tok/s | decode vs greedy | decode vs ws:auto | identical |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, per in report["summary"].items():
        for system, s in per.items():
            lines.append(
                f"| {kind} | {system} | {s['tokens_per_s']:.1f} | {fmt(s['accepted_per_forward'])} | "
                f"{fmt(s.get('verified_per_forward'))} | {fmt(s['forwards_per_token'])} | {fmt(s['acceptance'])} | "
                f"{fmt(s['vs_greedy'])}x | {fmt(s['vs_hf_lookup'])}x | {fmt(s.get('vs_ws_auto'))}x | "
                f"{fmt(s.get('decode_tokens_per_s'), 1)} | {times(s.get('decode_vs_greedy'))} | "
                f"{times(s.get('decode_vs_ws_auto'))} | {s['identical']}/{s['cases']} |"
            )
    for kind, per in report["summary"].items():
        if "exact_chars" in per["greedy"]:
            g = per["greedy"]
            lines.append(
                f"\nquality on {kind} (same for every lossless system): {100 * g['exact_chars']:.0f}% of the "
                f"author's characters matched from the cursor on average, {100 * g['exact_lines']:.0f}% of lines exact"
            )
    lines += [
        "",
        "| case | system | tokens | tokens/s | forwards | accepted/drafted | identical |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        ad = "–" if r["drafted"] is None else f"{r['accepted']}/{r['drafted']}"
        lines.append(
            f"| {r['case']} | {r['system']} | {r['tokens']} | {r['tokens_per_s']:.1f} | {r['forwards']} | {ad} | "
            f"{'yes' if r['identical'] else 'no (%.0f%% agree)' % (100 * r['agreement'])} |"
        )
    if report["prefix_reuse"]:
        lines += [
            "",
            "| prefix reuse: case | prompt tokens | reused | cold TTFT ms | warm TTFT ms | speedup |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for p in report["prefix_reuse"]:
            lines.append(
                f"| {p['case']} | {p['prompt_tokens']} | {p['reused_tokens']} | {p['cold_ttft_ms']:.0f} | "
                f"{p['warm_ttft_ms']:.0f} | {fmt(p['speedup'], 1)}x |"
            )
    return "\n".join(lines)
