"""`speclsp bench index`: micro-benchmarks of the workspace n-gram index and its drafter.

On a 5,000-line Python file (this package's own sources, repeated) tokenized with the
default model's tokenizer when it is cached (else the tiny test tokenizer), it measures:

- open          indexing the whole file from scratch
- keystroke     one `edit` while typing (insert one character, sometimes a backspace or a
                newline) at random places: re-tokenize the window, splice, update postings
- lookup        one `WorkspaceDrafter.lookup` (longest match + continuation, up to 64 tokens)
                for queries taken from the file (they match) and random ones (they do not)
- propose       one full `propose` (lookup and chaining)
- begin         indexing a 2,048-token prompt at the start of a request
- memory        bytes per indexed token: tracemalloc's count while opening, and the
                index's own estimate (`NgramIndex.stats`)
- gc            a full garbage collection with the file indexed and everything else frozen
                (as the server freezes what a load leaves), which holds the GIL

Prints a Markdown table and returns the numbers as a dict. Run it with
`python -m speclsp.bench.index [--lines N] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from ..drafting.index import NgramIndex
from ..drafting.tokens import make_tokenize
from ..drafting.workspace import WorkspaceDrafter


def load_tokenizer() -> tuple[Any, str]:
    """The default model's tokenizer if cached, else the tiny test tokenizer (built now)."""
    from transformers import AutoTokenizer

    from ..local import registry as models

    path = models.converted_dir(models.DEFAULT_MODEL)
    if (path / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(str(path)), models.DEFAULT_MODEL
    import tempfile

    from ..local import tiny

    out = tiny.build(Path(tempfile.mkdtemp(prefix="speclsp-tiny-")))
    return AutoTokenizer.from_pretrained(str(out)), "tiny"


def python_file(lines: int) -> str:
    """`lines` lines of real Python: this package's sources, repeated."""
    root = Path(__file__).resolve().parent.parent
    src = "".join(p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.py")))
    body = src.splitlines(keepends=True)
    out = (body * (lines // len(body) + 1))[:lines]
    return "".join(out)


def _stats_us(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "median_us": round(statistics.median(s) * 1e6, 1),
        "p95_us": round(s[int(0.95 * (len(s) - 1))] * 1e6, 1),
        "mean_us": round(statistics.fmean(s) * 1e6, 1),
        "max_us": round(s[-1] * 1e6, 1),
    }


def main_thread_stall_ms(work: Any, repeats: int = 3) -> tuple[float, float]:
    """(ms per run of `work` on another thread, worst delay of a 1 ms sleep on this one)."""
    import threading

    worst, t0 = 0.0, time.perf_counter()

    def run() -> None:
        for _ in range(repeats):
            work()

    th = threading.Thread(target=run)
    th.start()
    while th.is_alive():
        t1 = time.perf_counter()
        time.sleep(0.001)
        worst = max(worst, time.perf_counter() - t1 - 0.001)
    return round((time.perf_counter() - t0) / repeats * 1e3, 1), round(worst * 1e3, 1)


def run_index_bench(
    lines: int = 5000,
    keystrokes: int = 2000,
    lookups: int = 2000,
    seed: int = 0,
    tokenizer: Any = None,
    out: Any = sys.stdout,
) -> dict[str, Any]:
    """Run the micro-benchmarks, print a table to `out`, return the figures."""
    rnd = random.Random(seed)
    if tokenizer is None:
        tokenizer, tok_name = load_tokenizer()
    else:
        tok_name = type(tokenizer).__name__
    tokenize = make_tokenize(tokenizer)
    text = python_file(lines)
    uri = "file:///bench/big.py"

    # Memory: what opening the file allocates, as tracemalloc sees it.
    gc.collect()
    tracemalloc.start()
    probe = NgramIndex(tokenize)
    base = tracemalloc.get_traced_memory()[0]
    probe.open(uri, text)
    traced = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    est = probe.stats()
    del probe
    gc.collect()

    ix = NgramIndex(tokenize)
    t0 = time.perf_counter()
    ix.open(uri, text)
    open_s = time.perf_counter() - t0
    ntok = ix.ntokens

    # Keystrokes: mostly one character typed at the end of a line, some backspaces and newlines.
    edit_times: list[float] = []
    cur = text
    line_starts = [0] + [i + 1 for i, c in enumerate(cur) if c == "\n"]
    for _ in range(keystrokes):
        ln = rnd.randrange(len(line_starts) - 1)
        at = line_starts[ln + 1] - 1  # end of that line, before its newline
        r = rnd.random()
        if r < 0.8:
            s, e, new = at, at, rnd.choice("abcdefghijklmnopqrstuvwxyz_(). =:")
        elif r < 0.95 and at > line_starts[ln]:
            s, e, new = at - 1, at, ""
        else:
            s, e, new = at, at, "\n    "
        t1 = time.perf_counter()
        ix.edit(uri, s, e, new)
        edit_times.append(time.perf_counter() - t1)
        cur = cur[:s] + new + cur[e:]
        delta = len(new) - (e - s)
        if delta:  # keep the line table right (cheap enough outside the timed part)
            for i in range(ln + 1, len(line_starts)):
                line_starts[i] += delta
            if "\n" in new:
                line_starts = [0] + [i + 1 for i, c in enumerate(cur) if c == "\n"]
    exact = ix.tokens(uri) == tokenize(cur)[0]

    # Lookups: queries ending somewhere in the file (they match), and random ones.
    toks = ix.tokens(uri)
    drafter = WorkspaceDrafter(ix, index_prompt=False)
    drafter.set_request(uri)
    drafter.begin([])
    hit_t: list[float] = []
    miss_t: list[float] = []
    prop_t: list[float] = []
    drafted = 0
    for _ in range(lookups):
        end = rnd.randrange(64, len(toks))
        q = toks[end - 64 : end]
        t1 = time.perf_counter()
        got = drafter.lookup(q, 64)
        hit_t.append(time.perf_counter() - t1)
        drafted += len(got[0]) if got else 0
        q2 = [rnd.randrange(1000, 100000) for _ in range(64)]
        t1 = time.perf_counter()
        drafter.lookup(q2, 64)
        miss_t.append(time.perf_counter() - t1)
        t1 = time.perf_counter()
        drafter.propose(q, 64)
        prop_t.append(time.perf_counter() - t1)

    # begin(): indexing the request's prompt.
    prompt = toks[:2048]
    begin_t: list[float] = []
    d2 = WorkspaceDrafter(ix, index_prompt=True)
    for _ in range(5):
        t1 = time.perf_counter()
        d2.begin(prompt)
        begin_t.append(time.perf_counter() - t1)

    # What indexing on its own thread leaves the event loop: the worst delay of 1 ms sleeps on
    # this thread while a 40k-character document is tokenized or indexed on another.
    big = text[:40_000]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    stalls = {}
    if backend is not None:
        stalls["encode (holds the GIL)"] = main_thread_stall_ms(lambda: backend.encode(big, add_special_tokens=False))
    stalls["index tokenizer (encode_batch)"] = main_thread_stall_ms(lambda: tokenize(big))
    stalls["NgramIndex.open"] = main_thread_stall_ms(lambda: NgramIndex(tokenize).open("file:///bench/t.py", big))

    # What the index leaves the garbage collector: the server freezes what is alive after a
    # load (lsp/loading.py), so a full collection walks what was built since, holding the GIL.
    gc.collect()
    gc.freeze()
    try:
        fresh = NgramIndex(tokenize)
        fresh.open(uri, text)
        gc_t = []
        for _ in range(3):
            t1 = time.perf_counter()
            gc.collect()
            gc_t.append(time.perf_counter() - t1)
        del fresh
    finally:
        gc.unfreeze()

    result: dict[str, Any] = {
        "tokenizer": tok_name,
        "lines": lines,
        "chars": len(text),
        "tokens": ntok,
        "open_ms": round(open_s * 1e3, 1),
        "keystroke": _stats_us(edit_times),
        "keystroke_exact": exact,
        "lookup_hit": _stats_us(hit_t),
        "lookup_miss": _stats_us(miss_t),
        "propose": _stats_us(prop_t),
        "mean_draft_tokens": round(drafted / lookups, 1),
        "begin_2048_ms": round(min(begin_t) * 1e3, 2),
        "bytes_per_token_traced": round(traced / ntok, 1),
        "bytes_per_token_estimate": round(est.bytes_per_token, 1),
        "main_thread_stall_40k_ms": stalls,
        "full_gc_ms": round(min(gc_t) * 1e3, 2),
    }
    print_table(result, out)
    return result


def print_table(r: dict[str, Any], out: Any = sys.stdout) -> None:
    w = out.write
    w(
        f"\nn-gram index on a {r['lines']}-line Python file ({r['chars']} chars, {r['tokens']} tokens, "
        f"tokenizer {r['tokenizer']})\n\n"
    )
    w("| operation | median | p95 | mean | max |\n|---|---:|---:|---:|---:|\n")
    for key, label in (
        ("keystroke", "keystroke edit"),
        ("lookup_hit", "lookup (match)"),
        ("lookup_miss", "lookup (no match)"),
        ("propose", "propose (64 tokens)"),
    ):
        s = r[key]
        w(f"| {label} | {s['median_us']} µs | {s['p95_us']} µs | {s['mean_us']} µs | {s['max_us']} µs |\n")
    w(f"\n- open (index from scratch): {r['open_ms']} ms\n")
    w(f"- begin (index a 2,048-token prompt): {r['begin_2048_ms']} ms\n")
    if "full_gc_ms" in r:
        w(f"- a full garbage collection with the file indexed (the rest frozen): {r['full_gc_ms']} ms\n")
    w(
        f"- memory: {r['bytes_per_token_traced']} bytes/token (tracemalloc), "
        f"{r['bytes_per_token_estimate']} bytes/token (index estimate)\n"
    )
    w(f"- mean draft length for in-file queries: {r['mean_draft_tokens']} tokens\n")
    w(f"- tokens after the keystrokes equal a full re-tokenization: {r['keystroke_exact']}\n")
    for what, (work_ms, stall_ms) in r.get("main_thread_stall_40k_ms", {}).items():
        w(
            f"- 40k characters, {what}, on another thread: {work_ms} ms of work, "
            f"worst stall of this thread {stall_ms} ms\n"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m speclsp.bench.index", description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=5000)
    ap.add_argument("--keystrokes", type=int, default=2000)
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    result = run_index_bench(args.lines, args.keystrokes, args.lookups, args.seed)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
