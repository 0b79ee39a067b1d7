"""`speclsp bench draft`: draft-model speculation against greedy, transformers and n-grams.

One process, one target model and one draft model (same tokenizer; defaults
qwen2.5-coder-1.5b drafted by qwen2.5-coder-0.5b), the same prompts for every system:

- greedy        the engine with no drafts: the baseline
- hf-assisted   transformers `generate(assistant_model=draft)` with the draft model's
                default schedule (recorded in the report: in transformers 5 that is up to
                20 tokens, "constant", stopping below confidence 0.4; the threshold adapts
                through a ROC curve only where scikit-learn is installed)
- dm:threshold  speclsp's draft-model drafter alone, drafting whenever its confidence
                allows (threshold adjusted online, up to 16 tokens); the controller picks k
- dm:auto       the same, but a draft only when its planned tokens per second, counting
                the draft model's own measured cost, beat plain decoding (`--drafter model`)
- ws:auto       the workspace n-gram drafter alone
- hybrid:auto   per step the n-gram draft, the draft model's, or none

Workloads: edit-replay (hunks of real commits with `--repo`, else edits of real files) and
novel (little to copy). Greedy runs first with the show rules and fixes the token count N
every other system then generates; outputs are compared token for token. Every run starts
cold, target and draft model alike (the draft model keeps what it learnt, as the auto
controller does). Prints a Markdown table and writes `draft.json` under `--out`.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace

from ..completion.completer import Completer
from ..completion.context import PromptBudget
from ..drafting.drafter import Drafter
from .engine import Case, Run, cases, history_cases, run_hf
from .report import agreement, fmt, local_backend, summarise, threads, write_report

log = logging.getLogger(__name__)

SYSTEMS = ("greedy", "hf-assisted", "dm:threshold", "dm:auto", "ws:auto", "hybrid:auto")
DEFAULT_TARGET = "qwen2.5-coder-1.5b"
DEFAULT_DRAFT = "qwen2.5-coder-0.5b"


def assistant_schedule(draft_lm) -> dict:
    """What transformers' assisted generation will use for this draft model by default."""
    cfg = draft_lm.model.generation_config
    defaults = cfg._get_default_generation_params() if hasattr(cfg, "_get_default_generation_params") else {}
    pick = lambda k: getattr(cfg, k, None) if getattr(cfg, k, None) is not None else defaults.get(k)  # noqa: E731
    try:
        import sklearn  # noqa: F401

        adaptive = True
    except ImportError:
        adaptive = False
    return {
        "num_assistant_tokens": pick("num_assistant_tokens"),
        "num_assistant_tokens_schedule": pick("num_assistant_tokens_schedule"),
        "assistant_confidence_threshold": pick("assistant_confidence_threshold"),
        "threshold_adapts": adaptive,
    }


def run_one(
    completer: Completer, system: str, case: Case, prompt_ids, max_new: int, stop_text=None
) -> tuple[Run, dict]:
    """One system on one prompt from a cold cache; (run, draft-model figures)."""
    backend = local_backend(completer)
    dm = backend.model_drafter
    assert dm is not None, "bench draft loads a draft model"
    if system == "hf-assisted":
        return run_hf(backend.lm, prompt_ids, max_new, assistant_model=dm.lm.model), {}
    engine = backend.engine
    engine.reset()
    if system == "greedy":
        r = engine.generate(prompt_ids, max_new_tokens=max_new, stop_text=stop_text)
        extra: dict = {}
    else:
        kind, lookahead = system.split(":", 1)
        policy = completer.policy_for("auto")
        drafter: Drafter | None
        if system == "dm:threshold":
            drafter = dm
        else:
            ngram = completer.drafter_for(case.request(max_new))
            drafter = backend.speculation_drafter(
                ngram, {"dm": "model", "ws": "ngram", "hybrid": "hybrid"}[kind], policy, None
            )
        dm.reset()
        before = dm.stats.to_dict()
        r = engine.generate(prompt_ids, max_new_tokens=max_new, drafter=drafter, policy=policy, stop_text=stop_text)
        after = dm.stats.to_dict()
        extra = {}
        if kind != "ws":
            extra = {k: round(after[k] - before[k], 4) for k in ("forwards", "drafted", "seconds", "fed_tokens")}
            extra["threshold"] = round(dm.threshold.value, 3)
            extra["acceptance_rate"] = round(dm.acceptance_rate, 3)
            extra["choices"] = dict(getattr(drafter, "choices", {}))
    s = r.stats
    return Run(
        r.token_ids,
        s.total_ms / 1e3,
        s.forwards + s.prefill_forwards,
        s.ttft_ms / 1e3,
        s.drafted,
        s.accepted,
        r.text,
        [(st.k, st.accepted) for st in r.steps],
    ), extra


def main(args) -> dict:
    from tqdm import tqdm

    from ..completion.loader import Choice, load_completer

    quick = getattr(args, "quick", False)
    max_new = 32 if quick else getattr(args, "max_tokens", 96)
    say = lambda m: print(f"speclsp: {m}", file=sys.stderr)  # noqa: E731
    target = getattr(args, "model", None) or DEFAULT_TARGET
    draft = getattr(args, "draft_model", None) or DEFAULT_DRAFT
    # The backend checks that the tokenizers agree; calibrate before timing anything.
    completer = load_completer(Choice.of(args, model=target, draft_model=draft), progress=say, calibrate="full")
    backend = local_backend(completer)
    dm = backend.model_drafter
    assert dm is not None, "bench draft loads a draft model"
    say(
        f"draft model: {dm.token_s * 1e3:.0f} ms per draft token, "
        f"{dm.prefill_token_s * 1e3:.1f} ms per catch-up token; "
        f"target verify cost(0) {completer.auto_policy().costs.cost(0) * 1e3:.0f} ms"
    )
    all_cases = [c for c in cases(False) if c.kind == "novel"][: 2 if quick else 3]
    if getattr(args, "repo", None):
        all_cases = (
            history_cases(args.repo, getattr(args, "commits", 20), 2 if quick else getattr(args, "max_cases", 24))
            + all_cases
        )
    else:
        all_cases = [c for c in cases(quick) if c.kind == "edit"][: 2 if quick else 4] + all_cases
    # Quick runs keep prompts to 1024 tokens: on a 2-core CPU a 2k-token prefill of the
    # 1.5B model alone takes longer than the 32 tokens after it.
    budget = PromptBudget(max_prompt_tokens=1024, context_tokens=256) if quick else PromptBudget()
    rows, t0 = [], time.perf_counter()
    with tqdm(total=len(all_cases) * len(SYSTEMS), desc="bench draft", file=sys.stderr) as bar:
        for case in all_cases:
            req = replace(case.request(max_new), budget=budget)
            prompt, rules = completer.prompt_for(req)
            results: dict[str, tuple[Run, dict]] = {}
            n = max_new
            for system in SYSTEMS:
                bar.set_postfix_str(f"{case.name} {system}")
                stop = rules.cut if system == "greedy" else None
                results[system] = run_one(completer, system, case, prompt.ids, n, stop)
                if system == "greedy":
                    n = max(1, len(results[system][0].ids))
                bar.update(1)
            base = results["greedy"][0]
            for system, (r, extra) in results.items():
                k = len(r.ids)
                rows.append(
                    {
                        "case": case.name,
                        "kind": "edit-replay" if case.kind.startswith("edit") else case.kind,
                        "system": system,
                        "prompt_tokens": len(prompt.ids),
                        "tokens": k,
                        "seconds": r.seconds,
                        "ttft_s": r.ttft_s,
                        "tokens_per_s": k / r.seconds if r.seconds else 0.0,
                        "forwards": r.forwards,
                        "forwards_per_token": r.forwards / k if k else None,
                        "drafted": r.drafted,
                        "accepted": r.accepted,
                        "acceptance": (r.accepted / r.drafted) if r.accepted is not None and r.drafted else None,
                        "accepted_per_forward": (r.accepted / r.forwards)
                        if r.accepted is not None and r.forwards
                        else None,
                        "identical": r.ids == base.ids,
                        "agreement": agreement(r.ids, base.ids),
                        "quality": None,
                        "steps": r.steps,
                        "draft_model": extra or None,
                    }
                )
    lm, dlm = backend.lm, dm.lm
    report = {
        "model": lm.name,
        "draft_model": dlm.name,
        "device": str(lm.device),
        "dtype": lm.precision,
        "max_new_tokens": max_new,
        "repeats": 1,
        "threads": threads(),
        "prompt_budget": budget.max_prompt_tokens,
        "draft_token_ms": round(dm.token_s * 1e3, 2),
        "draft_catchup_token_ms": round(dm.prefill_token_s * 1e3, 3),
        "verify_costs_ms": {k: round(completer.auto_policy().costs.cost(k) * 1e3, 1) for k in (0, 1, 4, 8, 16)},
        "hf_assisted_schedule": assistant_schedule(dlm),
        "rows": rows,
        "summary": summarise(rows),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(render(report))
    write_report(getattr(args, "out", "bench-out"), "draft", report)
    return report


def render(report) -> str:
    s = report["hf_assisted_schedule"]
    lines = [
        f"target {report['model']}, draft {report['draft_model']} on {report['device']} ({report['dtype']}, "
        f"{report['threads']} threads), {report['max_new_tokens']} new tokens max, "
        f"prompts <= {report['prompt_budget']} "
        "tokens; times include prefill; every run cold",
        f"draft model {report['draft_token_ms']:.0f} ms/token; target verify cost(k) ms: {report['verify_costs_ms']}; "
        f"hf-assisted schedule: {s['num_assistant_tokens']} tokens, {s['num_assistant_tokens_schedule']}, "
        f"confidence threshold {s['assistant_confidence_threshold']} "
        f"({'adaptive' if s['threshold_adapts'] else 'fixed: no scikit-learn'})",
        "",
        "| workload | system | tokens/s | accepted/forward | forwards/token | acceptance | vs greedy | identical |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, per in report["summary"].items():
        for system, x in per.items():
            lines.append(
                f"| {kind} | {system} | {x['tokens_per_s']:.2f} | {fmt(x['accepted_per_forward'])} | "
                f"{fmt(x['forwards_per_token'])} | {fmt(x['acceptance'])} | {fmt(x['vs_greedy'])}x | "
                f"{x['identical']}/{x['cases']} |"
            )
    lines += [
        "",
        "| case | system | prompt | tokens | s | forwards | accepted/drafted "
        "| draft model: fwd, s, choices | identical |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in report["rows"]:
        ad = "–" if r["drafted"] is None else f"{r['accepted']}/{r['drafted']}"
        d = r["draft_model"]
        dd = (
            "–"
            if not d
            else f"{d['forwards']}, {d['seconds']:.2f}, " + " ".join(f"{k}={v}" for k, v in d["choices"].items() if v)
        )
        lines.append(
            f"| {r['case']} | {r['system']} | {r['prompt_tokens']} | {r['tokens']} | {r['seconds']:.1f} | "
            f"{r['forwards']} | {ad} | {dd} | "
            f"{'yes' if r['identical'] else 'no (%.0f%% agree)' % (100 * r['agreement'])} |"
        )
    return "\n".join(lines)
