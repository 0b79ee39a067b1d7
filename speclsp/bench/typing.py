"""Typing replay: a real file typed character by character through the real language server.

Starts `python -m speclsp --stdio` as a subprocess and plays an editor: the first part of
the file is opened, the rest is typed at a steady pace (8 characters per second by default,
a brisk programmer), and after every keystroke the editor does what VS Code does: cancel
the previous inline completion request if it is still open ($/cancelRequest), send the
incremental didChange, then an automatic `textDocument/inlineCompletion`. A newline is
typed together with the next line's indentation, as auto-indent inserts it.

Measured per request, from sending it: the first suggestion text the editor could show
(the first non-empty streaming update, or a non-empty response, whichever is earlier), and
the final text (the streaming update marked done, or the response). Requests that end empty,
cancelled or superseded count separately. From the server's `speclsp/stats` at the end:
model calls per keystroke, cache hits (typed-through suggestions), tokens/s, acceptance.

What a user feels are the pauses: most requests are cancelled by the next keystroke, and
only when the user stops typing does a suggestion matter. For every pause (no keystroke for
at least `PAUSE_S` after one, and the end of typing): the time from that last keystroke to
the first ghost text the editor could show for it, if it came before the next keystroke;
p50/p95 over the pauses that got text, and the share of pauses that got any.

    speclsp bench typing [--file F] [--cps 8] [--line-pause 1] [--chars 240] [--model M] [--no-stream]

This file is one concern (a typist replayed against the real server, and its table) at ~430 lines.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .report import percentile

log = logging.getLogger(__name__)

PAUSE_S = 0.5  # no keystroke for this long after one: the user stopped, a suggestion matters


@dataclass
class Request:
    id: str
    keystroke: int
    sent: float
    first_text: float | None = None
    final: float | None = None
    answered: float | None = None
    text: str = ""
    outcome: str = "pending"  # "text", "empty", "cancelled", "error"


@dataclass
class Replay:
    file: str
    typed_chars: int
    keystrokes: int
    cps: float
    streaming: bool
    requests: list[Request] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    load_s: float = 0.0
    line_pause: float = 0.0


def keystrokes(text: str) -> list[str]:
    """Characters as an editor inserts them: a newline carries the next line's indentation."""
    keys: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        i += 1
        if ch == "\n":
            j = i
            while j < len(text) and text[j] in " \t":
                j += 1
            ch += text[i:j]
            i = j
        keys.append(ch)
    return keys


def _units(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


async def replay(
    text: str,
    start: int,
    n_keys: int,
    cps: float,
    server_cmd: list[str],
    options: dict,
    streaming: bool,
    path: str,
    env: dict[str, str] | None = None,
    line_pause: float = 0.0,
) -> Replay:
    from lsprotocol import types as T
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("speclsp-bench", "0.1")
    keys = keystrokes(text[start:])[:n_keys]
    rep = Replay(path, sum(len(k) for k in keys), len(keys), cps, streaming, line_pause=line_pause)
    by_id: dict[str, Request] = {}
    ready = asyncio.Event()

    @client.feature("speclsp/status")
    def on_status(params):
        state = params.state if hasattr(params, "state") else params.get("state")
        if state in ("ready", "error"):
            if state == "error":
                log.error("server could not load the model: %s", getattr(params, "message", params))
            ready.set()

    @client.feature("speclsp/inlineCompletionUpdate")
    def on_update(params):
        req = by_id.get(str(params.requestId))
        if req is None:
            return
        now = time.perf_counter()
        if params.text and req.first_text is None:
            req.first_text = now
        if params.done and req.final is None:
            req.final = now

    @client.feature(T.WINDOW_SHOW_MESSAGE)
    def on_message(params):
        log.warning("server says: %s", params.message)

    await client.start_io(*server_cmd, env=env)
    caps = T.ClientCapabilities(
        general=T.GeneralClientCapabilities(position_encodings=[T.PositionEncodingKind.Utf16]),
        text_document=T.TextDocumentClientCapabilities(inline_completion=T.InlineCompletionClientCapabilities()),
        experimental={"speclsp": {"inlineCompletionUpdate": True}} if streaming else None,
    )
    t_load = time.perf_counter()
    await client.initialize_async(
        T.InitializeParams(capabilities=caps, process_id=os.getpid(), initialization_options=options)
    )
    client.initialized(T.InitializedParams())
    await asyncio.wait_for(ready.wait(), 600)
    rep.load_s = time.perf_counter() - t_load

    uri = Path(path).resolve().as_uri()
    doc = text[:start]
    client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, "python", 1, doc)))
    version = 1
    pending: dict[str, asyncio.Future] = {}

    def on_done(req: Request, fut: asyncio.Future) -> None:
        pending.pop(req.id, None)
        req.answered = time.perf_counter()
        if fut.cancelled():
            req.outcome = "cancelled"
            return
        exc = fut.exception()
        if exc is not None:
            req.outcome = "cancelled" if "cancel" in type(exc).__name__.lower() else "error"
            return
        items = fut.result().items if fut.result() is not None else []
        if items:
            req.text = items[0].insert_text
            req.outcome = "text"
            req.first_text = min(req.first_text or req.answered, req.answered)
            if not streaming or req.final is None:
                req.final = req.answered
        else:
            req.outcome = "empty"

    t0 = time.perf_counter()
    at = t0
    for i, key in enumerate(keys):
        # Keep the pace whatever the server does: 1 / cps between keys, plus a pause before
        # typing on after a newline (people stop at the end of a line; that is when a
        # suggestion for the next line helps).
        if i:
            at += 1 / cps + (line_pause if keys[i - 1].startswith("\n") else 0.0)
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for rid in list(pending):  # the document is about to change: VS Code cancels
            client.cancel_request(T.CancelParams(id=rid))
        lines = doc.split("\n")
        pos = T.Position(len(lines) - 1, _units(lines[-1]))
        doc += key
        version += 1
        client.text_document_did_change(
            T.DidChangeTextDocumentParams(
                T.VersionedTextDocumentIdentifier(version=version, uri=uri),
                [T.TextDocumentContentChangePartial(range=T.Range(pos, pos), text=key)],
            )
        )
        lines = doc.split("\n")
        cursor = T.Position(len(lines) - 1, _units(lines[-1]))
        rid = f"k{i}"
        req = Request(rid, i, time.perf_counter())
        by_id[rid] = req
        rep.requests.append(req)
        fut = asyncio.wrap_future(
            client.protocol.send_request(
                T.TEXT_DOCUMENT_INLINE_COMPLETION,
                T.InlineCompletionParams(
                    context=T.InlineCompletionContext(T.InlineCompletionTriggerKind.Automatic),
                    text_document=T.TextDocumentIdentifier(uri),
                    position=cursor,
                ),
                msg_id=rid,
            )
        )
        pending[rid] = fut
        fut.add_done_callback(functools.partial(on_done, req))
    # Let the last request finish, as the user stops typing.
    if pending:
        await asyncio.wait(list(pending.values()), timeout=30)
    rep.wall_s = time.perf_counter() - t0
    rep.stats = _plain(await client.protocol.send_request_async("speclsp/stats", None))
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return rep


def _plain(obj: Any) -> Any:
    if hasattr(obj, "_asdict"):
        return {k: _plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def pauses(rep: Replay) -> list[dict[str, Any]]:
    """Every pause: the keystroke before it, how long it lasted, and when ghost text came
    (ms after that keystroke; None if nothing showed before the next keystroke)."""
    reqs = rep.requests
    out = []
    for i, r in enumerate(reqs):
        nxt = reqs[i + 1].sent if i + 1 < len(reqs) else None
        gap = (nxt - r.sent) if nxt is not None else None
        if gap is not None and gap < PAUSE_S:
            continue
        # when ghost text showed, if it did before the next keystroke
        shown = r.first_text if r.first_text is not None and (nxt is None or r.first_text < nxt) else None
        out.append(
            {
                "keystroke": r.keystroke,
                "gap_s": None if gap is None else round(gap, 3),
                "first_text_ms": None if shown is None else round((shown - r.sent) * 1e3, 1),
            }
        )
    return out


def summarise(rep: Replay) -> dict[str, Any]:
    reqs = rep.requests
    ps = pauses(rep)
    pause_ms = [p["first_text_ms"] for p in ps if p["first_text_ms"] is not None]
    shown = [r for r in reqs if r.outcome == "text"]
    first = [(r.first_text - r.sent) * 1e3 for r in shown if r.first_text]
    final = [(r.final - r.sent) * 1e3 for r in shown if r.final]
    st = rep.stats
    return {
        "keystrokes": rep.keystrokes,
        "requests": len(reqs),
        "with_text": len(shown),
        "empty": sum(r.outcome == "empty" for r in reqs),
        "cancelled_by_client": sum(r.outcome == "cancelled" for r in reqs),
        "first_text_p50_ms": percentile(first, 0.5),
        "first_text_p95_ms": percentile(first, 0.95),
        "final_text_p50_ms": percentile(final, 0.5),
        "final_text_p95_ms": percentile(final, 0.95),
        "pauses": len(ps),
        "pauses_with_text": len(pause_ms),
        "pause_text_share": round(len(pause_ms) / len(ps), 3) if ps else None,
        "pause_first_text_p50_ms": percentile(pause_ms, 0.5),
        "pause_first_text_p95_ms": percentile(pause_ms, 0.95),
        "keystrokes_from_cache": round((st.get("cacheHits") or 0) / max(1, rep.keystrokes), 3),
        "model_calls": st.get("modelCalls"),
        "model_calls_per_keystroke": round((st.get("modelCalls") or 0) / max(1, rep.keystrokes), 3),
        "cache_hits": st.get("cacheHits"),
        # Per request (a hit may be cancelled by the next keystroke, like any request).
        "cache_hit_rate": round((st.get("cacheHits") or 0) / len(reqs), 3) if reqs else None,
        "superseded": st.get("superseded"),
        "stale": st.get("stale"),
        "server_cancelled": st.get("cancelled"),
        "tokens_per_s": st.get("tokensPerSecond"),
        "acceptance": st.get("acceptance"),
        "server_latency_ms": st.get("latencyMs"),
    }


def render(rep: Replay, s: dict[str, Any]) -> str:
    def ms(v):
        return "-" if v is None else f"{v:.0f}"

    st = rep.stats
    head = (
        f"typing replay: {Path(rep.file).name}, {rep.keystrokes} keystrokes ({rep.typed_chars} chars) at "
        f"{rep.cps:g} chars/s with {rep.line_pause:g} s pauses at line ends, "
        f"streaming {'on' if rep.streaming else 'off'}; model {st.get('model')} on "
        f"{st.get('device')} (loaded in {rep.load_s:.1f} s)"
    )
    rows = [
        (f"pauses (no key for >= {PAUSE_S:g} s, and the end)", s["pauses"]),
        (
            "pauses that got ghost text before the next key",
            "-" if s["pause_text_share"] is None else f"{100 * s['pause_text_share']:.0f}% ({s['pauses_with_text']})",
        ),
        (
            "last key -> first ghost text in a pause p50 / p95 (ms)",
            f"{ms(s['pause_first_text_p50_ms'])} / {ms(s['pause_first_text_p95_ms'])}",
        ),
        ("keystrokes answered from the typed-through cache", f"{100 * s['keystrokes_from_cache']:.0f}%"),
        ("requests (one per keystroke)", s["requests"]),
        ("answered with text", s["with_text"]),
        ("answered empty", s["empty"]),
        ("cancelled by the editor ($/cancelRequest)", s["cancelled_by_client"]),
        ("request -> first text p50 / p95 (ms)", f"{ms(s['first_text_p50_ms'])} / {ms(s['first_text_p95_ms'])}"),
        ("request -> final text p50 / p95 (ms)", f"{ms(s['final_text_p50_ms'])} / {ms(s['final_text_p95_ms'])}"),
        ("model calls per keystroke", f"{s['model_calls_per_keystroke']:.2f} ({s['model_calls']} calls)"),
        (
            "cache hit rate (typed-through)",
            "-" if s["cache_hit_rate"] is None else f"{100 * s['cache_hit_rate']:.0f}% ({s['cache_hits']} hits)",
        ),
        ("superseded / stale answers (server)", f"{s['superseded']} / {s['stale']}"),
        ("decode tokens/s, draft acceptance", f"{s['tokens_per_s']} / {s['acceptance']}"),
    ]
    lines = [head, "", "| metric | value |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def _server_cmd(args) -> list[str]:
    cmd = [sys.executable, "-m", "speclsp", "--stdio"]
    for flag in ("model", "device", "dtype", "backend", "endpoint", "remote_model", "api_key_env"):
        if getattr(args, flag, None):
            cmd += [f"--{flag.replace('_', '-')}", getattr(args, flag)]
    if getattr(args, "server_log", None):
        cmd += ["--log-file", args.server_log, "-v"]
    return cmd


def default_file() -> Path:
    """A real public Python file with little repetition, present wherever Python is: the
    standard library's textwrap.py (the demo file repeats itself, the favourable case)."""
    import sysconfig

    return Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py"


def run(args) -> dict[str, Any]:
    path = Path(getattr(args, "file", None) or default_file())
    text = path.read_text().replace("\r\n", "\n")
    n_keys = getattr(args, "chars", None) or 240
    start = getattr(args, "start", None)
    if start is None:  # type the last `n_keys` keystrokes' worth, after at least a few lines of context
        start = max(0, len(text) - int(n_keys * 1.3))
        start = text.rfind("\n", 0, start) + 1
    options = {"maxTokens": getattr(args, "max_tokens", None) or 64}
    if getattr(args, "lookahead", None):
        options["lookahead"] = args.lookahead
    streaming = not getattr(args, "no_stream", False)
    with tempfile.TemporaryDirectory() as tmp:
        # The replayed copy lives elsewhere so the real file's folder does not matter.
        copy = Path(tmp) / path.name
        copy.write_text(text)
        rep = asyncio.run(
            replay(
                text,
                start,
                n_keys,
                getattr(args, "cps", None) or 8.0,
                _server_cmd(args),
                options,
                streaming,
                str(copy),
                line_pause=getattr(args, "line_pause", 0.0) or 0.0,
            )
        )
    rep.file = str(path)
    s = summarise(rep)
    return {
        "summary": s,
        "markdown": render(rep, s),
        "requests": [asdict(r) for r in rep.requests],
        "pauses": pauses(rep),
        "stats": rep.stats,
        "wall_s": round(rep.wall_s, 1),
        "load_s": round(rep.load_s, 1),
    }


def run_for_suite(args, quick: bool = False) -> dict[str, Any]:
    ns = argparse.Namespace(**vars(args))
    if quick:
        ns.chars = min(getattr(ns, "chars", None) or 80, 80)
    return run(ns)


def plot_pauses(pauses: list[dict[str, Any]], out: Path) -> str:
    """`pauses.png`: the share of pauses that had ghost text by a given time after the last key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    got = sorted(p["first_text_ms"] for p in pauses if p["first_text_ms"] is not None)
    ax.plot(got, [(i + 1) / len(pauses) for i in range(len(got))], drawstyle="steps-post", marker=".")
    ax.set_xlabel("last keystroke -> first ghost text (ms)")
    ax.set_ylabel("share of pauses with ghost text by then")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"typing replay: {len(got)} of {len(pauses)} pauses got ghost text")
    fig.tight_layout()
    fig.savefig(out / "pauses.png", dpi=110)
    plt.close(fig)
    return "pauses.png"


def main(args) -> dict[str, Any]:
    from .report import write_report

    report = run(args)
    print(report["markdown"])
    out = Path(getattr(args, "out", None) or "bench-out")
    write_report(out, "typing", report, report["markdown"])
    if report["pauses"]:
        print(f"plot: {out / plot_pauses(report['pauses'], out)}", file=sys.stderr)
    return report
