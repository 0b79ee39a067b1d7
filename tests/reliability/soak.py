"""The long soak: hours of typing through one real server over TCP, mixed with everything
reliability rounds 1-3 found, while memory and the event loop's worst stall are sampled.

    python tests/reliability/soak.py --minutes 120 --out soak.json

What runs, at a typist's pace, for the whole time (the tiny model, float32, one thread):
- typing and automatic completion requests in a few ordinary documents, cancelling the last;
- documents up to the caps: one just under `maxDocumentChars` (completed, not indexed), one
  over it (kept in sync, not completed), and medium ones that fill the index to its
  `indexMaxTokens` so it evicts;
- workspace folders added and removed, with documents in them;
- remote faults: the backend switched to an OpenAI-compatible server that answers with each
  fault in turn (HTTP 500, 429 with Retry-After, cut JSON, a stall, a dropped connection, a
  10 MB line, special tokens), then back to the local model;
- TCP reconnects: the server serves one client per process (as over stdio), so a
  reconnecting editor starts a new one. Every few minutes a second `--tcp` server is started,
  held by an idle connection first, then used by an editor that disconnects abruptly
  mid-message; it must serve the editor and exit by itself each time. Connecting to the main
  server while its editor is connected must not disturb it;
- bad input: cut JSON, a lying Content-Length, wrong types, unknown methods, unopened
  documents, long lines.

Every `--sample-s` it records the server's RSS and `speclsp/stats`. At the end: every
request got exactly one answer, the server still serves and exits 0 after shutdown, RSS
stayed within 10% of its level after the warm-up (`--warmup-minutes`, 10 by default): its
peak and its median both, against the window of the warm-up's length after it (see
`rss_checks`), and the worst loop stall stayed under 250 ms. It prints a table, writes the samples as JSON, and
exits 1 if any of these failed. `tests/reliability/test_soak.py` runs it for a minute in the
test suite; docs/reliability.md has the two-hour figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(TESTS / "support"), str(TESTS)]  # rawlsp, fakeopenai; conftest (SERVER_ENV)

from fakeopenai import FakeServer  # noqa: E402
from rawlsp import RawServer, frame, read_message, rss_kb  # noqa: E402

RSS_SLACK = 0.10
LAG_LIMIT_MS = 250.0
MAX_DOCUMENT_CHARS = 1_000_000  # Config.max_document_chars
FAULTS = ("http500", "busy", "malformed", "slow", "dies", "error_event", "huge_line", "hostile", "ok")
OPTIONS = {"maxTokens": 16, "lookahead": "auto"}
# The kinds of event and how often each comes (weights of the random choice).
KINDS = {"typing": 60, "big": 3, "folders": 6, "remote": 4, "tcp": 2, "bad": 25}
BASE = (
    "class Store:\n    def __init__(self):\n        self.items = {}\n\n"
    "    def get(self, key):\n        return self.items[key]\n\n    def put(self, key, value):\n        "
)
SNIPPETS = (
    "self.items[key] = value\n        ",
    "return ",
    "if key in self.items:\n            ",
    "value",
    " = ",
    "(",
    ")",
    "self.",
    "\n",
    "get(key)",
    "# note\n        ",
)


def code(chars: int, seed: int) -> str:
    """About `chars` characters of varied Python (every function differs)."""
    out, n, i = [], 0, 0
    while n < chars:
        line = (
            f"def handler_{seed}_{i}(request, value_{i % 97}):\n"
            f"    return process(request, value_{i % 97}) + {i * 7919 % 10007}\n\n"
        )
        out.append(line)
        n += len(line)
        i += 1
    return "".join(out)[:chars]


def smaps_mb(pid: int) -> dict[str, float]:
    """Where a process's resident memory is, in MB: `heap` (the main heap), `arenas`
    (glibc's per-thread heaps: anonymous maps starting on a 64 MiB boundary), `anon` (other
    anonymous maps: Python's arenas, large blocks malloc maps on their own, torch's), `files`
    (code and mapped files)."""
    out = dict.fromkeys(("heap", "arenas", "anon", "files"), 0.0)
    kind = "anon"
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else ""
            start = int(head[0].split("-")[0], 16)
            if name == "[heap]":
                kind = "heap"
            elif name.startswith("/"):
                kind = "files"
            elif not name and start % (64 << 20) == 0:
                kind = "arenas"
            else:
                kind = "anon"
        elif head[0] == "Rss:":
            out[kind] += int(head[1]) / 1024
    return {k: round(v, 1) for k, v in out.items()}


class Stop(Exception):
    """The soak cannot go on (a failure is recorded): finish, report, keep the logs."""


class Soak:
    def __init__(self, model: str, workdir: Path, seed: int, sample_s: float, only: list[str] | None = None) -> None:
        unknown = set(only or ()) - set(KINDS)
        if unknown:
            raise SystemExit(f"soak: unknown kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        self.only = only or list(KINDS)
        self.rng = random.Random(seed)
        self.work = workdir
        self.sample_s = sample_s
        self.fake = FakeServer(text="return self.items.get(key)\n").start()
        self.fake.huge = 10 << 20
        self.folders = [workdir / "a", workdir / "b", workdir / "c"]
        for f in self.folders:
            f.mkdir(parents=True, exist_ok=True)
        self.model = model
        self.s = RawServer(model, workdir / "server.log", "-v", tcp=True)
        self.s.initialize(self.folders[0], OPTIONS)
        self.pending: dict[str, float] = {}  # request id -> when sent
        self.answered = 0
        self.duplicates = 0
        self.seen: set[str] = set()
        self.texts: dict[str, str] = {}
        self.next_id = 0
        self.counts: dict[str, int] = {}
        self.samples: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.tcp_exits: list[int | None] = []
        self.medium: list[str] = []

    # --- the editor's side -------------------------------------------------------------------

    def request(self, method: str, params: Any) -> str:
        self.next_id += 1
        msg_id = f"soak-{self.next_id}"
        self.s.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        self.pending[msg_id] = time.monotonic()
        return msg_id

    def collect(self) -> None:
        """Move answers out of the client's message list (it would grow for hours)."""
        with self.s.cv:
            messages, self.s.messages = self.s.messages, []
        for m in messages:
            msg_id = m.get("id")
            if "method" in m or not isinstance(msg_id, str) or not msg_id.startswith("soak-"):
                continue
            if msg_id in self.seen:
                self.duplicates += 1
            self.seen.add(msg_id)
            if self.pending.pop(msg_id, None) is not None:
                self.answered += 1

    def open(self, uri: str, text: str) -> None:
        self.texts[uri] = text
        self.s.open(uri, text)

    def close(self, uri: str) -> None:
        self.texts.pop(uri, None)
        self.s.notify("textDocument/didClose", {"textDocument": {"uri": uri}})

    def type_at_end(self, uri: str, new: str) -> None:
        text = self.texts[uri]
        lines = text.split("\n")
        self.texts[uri] = text + new
        self.s.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": self.next_id},
                "contentChanges": [
                    {
                        "range": {
                            "start": {"line": len(lines) - 1, "character": len(lines[-1])},
                            "end": {"line": len(lines) - 1, "character": len(lines[-1])},
                        },
                        "text": new,
                    }
                ],
            },
        )

    def inline_at_end(self, uri: str, invoked: bool = False) -> str:
        lines = self.texts[uri].split("\n")
        return self.request(
            "textDocument/inlineCompletion",
            {
                "textDocument": {"uri": uri},
                "position": {"line": len(lines) - 1, "character": len(lines[-1])},
                "context": {"triggerKind": 1 if invoked else 2},
            },
        )

    def configure(self, **options: Any) -> None:
        self.s.notify("workspace/didChangeConfiguration", {"settings": {"speclsp": {**OPTIONS, **options}}})

    # --- what happens ------------------------------------------------------------------------

    def typing(self, uri: str, keys: int) -> None:
        last = None
        for _ in range(keys):
            self.type_at_end(uri, self.rng.choice(SNIPPETS))
            if last is not None and self.rng.random() < 0.5:
                self.s.notify("$/cancelRequest", {"id": last})
            last = self.inline_at_end(uri, invoked=self.rng.random() < 0.1)
            time.sleep(self.rng.uniform(0.05, 0.25))

    def big_documents(self, n: int) -> None:
        folder = self.folders[0]
        near = (folder / f"near-cap-{n}.py").as_uri()
        self.open(near, code(MAX_DOCUMENT_CHARS - 2000, n))
        self.typing(near, 5)
        self.close(near)
        over = (folder / f"over-cap-{n}.py").as_uri()
        self.open(over, code(MAX_DOCUMENT_CHARS + 50_000, n))
        self.typing(over, 3)
        self.close(over)
        # Medium documents stay open: together they fill the index to its cap (500k tokens).
        uri = (folder / f"medium-{n}.py").as_uri()
        self.open(uri, code(300_000, n))
        self.medium.append(uri)
        if len(self.medium) > 8:
            self.close(self.medium.pop(0))

    def folders_change(self, n: int) -> None:
        folder = self.folders[1 + n % 2]
        event = {"added": [{"uri": folder.as_uri(), "name": folder.name}], "removed": []}
        self.s.notify("workspace/didChangeWorkspaceFolders", {"event": event})
        uri = (folder / f"in-folder-{n}.py").as_uri()
        self.open(uri, BASE + code(20_000, n))
        self.typing(uri, 8)
        self.close(uri)
        event = {"added": [], "removed": [{"uri": folder.as_uri(), "name": folder.name}]}
        self.s.notify("workspace/didChangeWorkspaceFolders", {"event": event})

    def remote_faults(self, uri: str, n: int) -> None:
        self.fake.mode = FAULTS[n % len(FAULTS)]
        if self.fake.mode == "hostile":
            self.fake.text = "x = 1<|endoftext|>\x00\x1b[2J<|fim_middle|>\n"
        self.configure(backend="openai", endpoint=self.fake.endpoint, remoteModel="fake")
        self.typing(uri, 6)
        self.configure(backend="local")
        self.fake.text = "return self.items.get(key)\n"

    def tcp_reconnect(self) -> None:
        """A second server: an idle connection first, then an editor that leaves mid-message."""
        # The main server's editor is connected, so it no longer listens: refused, or dropped.
        try:
            socket.create_connection(("127.0.0.1", self.s.port), timeout=5).close()
        except OSError:
            pass
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "speclsp",
                "--tcp=127.0.0.1:0",
                "--model",
                self.model,
                "--device",
                "cpu",
                "--dtype",
                "float32",
                "--log-file",
                str(self.work / "tcp.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.s_env(),
        )
        try:
            port = int(proc.stderr.readline().decode().split("127.0.0.1:")[1].split()[0])
            idle = socket.create_connection(("127.0.0.1", port), timeout=30)
            editor = socket.create_connection(("127.0.0.1", port), timeout=60)
            root = self.folders[0].as_uri()
            editor.sendall(
                frame(
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "initialize",
                        "params": {
                            "processId": None,
                            "rootUri": root,
                            "capabilities": {},
                            "initializationOptions": OPTIONS,
                        },
                    }
                )
            )
            reader = editor.makefile("rb")
            if "capabilities" not in read_message(reader).get("result", {}):
                self.failures.append("a reconnecting editor was not served")
            editor.sendall(frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
            editor.sendall(
                frame(
                    {
                        "jsonrpc": "2.0",
                        "method": "textDocument/didOpen",
                        "params": {
                            "textDocument": {"uri": root + "/r.py", "languageId": "python", "version": 1, "text": BASE}
                        },
                    }
                )
            )
            editor.sendall(frame({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {}})[:30])
            reader.close()  # (the socket stays open while a file made from it is)
            editor.close()  # mid-message, without shutdown
            idle.close()
            self.tcp_exits.append(proc.wait(60))  # 1: it ended without a shutdown request
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as e:
            self.failures.append(f"TCP reconnect: {e!r}")
        finally:
            if proc.poll() is None:
                proc.kill()
                self.tcp_exits.append(None)
            proc.wait()
            proc.stderr.close()

    def s_env(self) -> dict:
        from conftest import SERVER_ENV

        return SERVER_ENV

    def bad_input(self, uri: str) -> None:
        kind = self.rng.choice(
            ("bad-json", "lying-length", "wrong-types", "unknown-method", "unopened", "long-line", "repeated-text")
        )
        self.counts["bad:" + kind] = self.counts.get("bad:" + kind, 0) + 1
        if kind == "bad-json":
            self.s.write(frame(b'{"jsonrpc": "2.0", "id": 1, "method": '))
        elif kind == "lying-length":
            self.s.write(b'Content-Length: 1000000\r\n\r\n{"jsonrpc": "2.0"}')
        elif kind == "wrong-types":
            self.request(
                "textDocument/inlineCompletion",
                {
                    "textDocument": {"uri": uri},
                    "position": {"line": self.rng.choice(["0", 1.5, True, None]), "character": 0},
                    "context": {"triggerKind": 1},
                },
            )
        elif kind == "unknown-method":
            self.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": 0}})
        elif kind == "unopened":
            self.request(
                "textDocument/inlineCompletion",
                {
                    "textDocument": {"uri": "file:///nowhere/x.py"},
                    "position": {"line": 0, "character": 0},
                    "context": {"triggerKind": 1},
                },
            )
        elif kind == "long-line":
            tmp = (self.folders[0] / "long.py").as_uri()
            self.open(tmp, "abc_" * 5000 + " = mul")
            self.inline_at_end(tmp)
            self.close(tmp)
        else:
            tmp = (self.folders[0] / "rep.py").as_uri()
            self.open(tmp, "0," * 20000)
            self.close(tmp)

    def sample(self, t0: float) -> None:
        self.collect()
        try:
            stats = self.s.request("speclsp/stats", None, timeout=60)["result"]
        except AssertionError:  # unanswered: a hang; every thread's stack goes to its log
            os.kill(self.s.pid, signal.SIGUSR1)
            time.sleep(2)
            self.failures.append(f"speclsp/stats unanswered for 60 s at minute {(time.monotonic() - t0) / 60:.1f}")
            raise Stop from None
        self.collect()
        now = time.monotonic()
        late = [i for i, t in self.pending.items() if now - t > 120]
        if late:
            self.failures.append(f"{len(late)} requests unanswered after 2 minutes, e.g. {late[0]}")
            for i in late:
                del self.pending[i]
        row = {
            "minute": round((now - t0) / 60, 2),
            "rssMB": round(rss_kb(self.s.pid) / 1024, 1),
            "loopLagMaxMs": stats.get("loopLagMaxMs"),
            "loopLagP99Ms": stats.get("loopLagP99Ms"),
            "gcMaxMs": stats.get("gcMaxMs"),
            "requests": self.next_id,
            "answered": self.answered,
            "indexedTokens": stats.get("indexedTokens"),
            "mallocFreeMB": stats.get("mallocFreeMB"),
            "trimmedMB": stats.get("trimmedMB"),
            "mallocHeapUsedMB": stats.get("mallocHeapUsedMB"),
            "mallocMappedMB": stats.get("mallocMappedMB"),
            "pythonBlocks": stats.get("pythonBlocks"),
            "threads": stats.get("threads"),
            "threadNames": dict(stats.get("threadNames") or []),
            "documents": stats.get("documents"),
            "documentChars": stats.get("documentChars"),
            "smapsMB": smaps_mb(self.s.pid),
            "counts": dict(self.counts),
        }
        self.samples.append(row)
        print(
            f"[soak] {row['minute']:7.2f} min  RSS {row['rssMB']:7.1f} MB  loop lag max "
            f"{row['loopLagMaxMs']} ms  p99 {row['loopLagP99Ms']} ms  requests {self.next_id}  indexed tokens "
            f"{row['indexedTokens']}  malloc free {row['mallocFreeMB']} MB  trimmed {row['trimmedMB']} MB  heap used "
            f"{row['mallocHeapUsedMB']} MB  mapped {row['mallocMappedMB']} MB  python blocks {row['pythonBlocks']}  "
            f"threads {row['threads']} {row['threadNames']}  documents {row['documents']} "
            f"({row['documentChars']} chars)  {row['smapsMB']}",
            file=sys.stderr,
            flush=True,
        )

    def run(self, minutes: float) -> None:
        docs = [(self.folders[0] / f"doc{i}.py").as_uri() for i in range(3)]
        for uri in docs:
            self.open(uri, BASE)
        t0 = time.monotonic()
        next_sample = t0
        n = 0
        while time.monotonic() - t0 < minutes * 60:
            if time.monotonic() >= next_sample:
                self.sample(t0)
                next_sample += self.sample_s
            uri = self.rng.choice(docs)
            if len(self.texts[uri]) > 20_000:  # keep typing documents of a realistic length
                self.close(uri)
                self.open(uri, BASE)
            # Each kind once first (a short run covers them all), then at random.
            kinds = [k for k in KINDS if k in self.only]
            kind = kinds[n] if n < len(kinds) else self.rng.choices(kinds, weights=[KINDS[k] for k in kinds])[0]
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if kind == "typing":
                self.typing(uri, self.rng.randrange(3, 12))
            elif kind == "big":
                self.big_documents(n)
            elif kind == "folders":
                self.folders_change(n)
            elif kind == "remote":
                self.remote_faults(uri, n)
            elif kind == "tcp":
                self.tcp_reconnect()
            else:
                self.bad_input(uri)
            n += 1
        self.sample(t0)

    def finish(self) -> int:
        """Wait for every answer, then shutdown + exit; returns the exit code."""
        deadline = time.monotonic() + 120
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.5)
            self.collect()
        if self.pending:
            self.failures.append(f"{len(self.pending)} requests never answered")
        if self.s.proc.poll() is not None:
            self.failures.append(f"the server exited during the soak (code {self.s.proc.poll()})")
        code = self.s.close()
        self.fake.stop()
        return code


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def rss_checks(samples: list[dict[str, Any]], warmup_minutes: float) -> dict[str, Any]:
    """RSS against its level once warmed up: the window of `warmup_minutes` after the
    warm-up sets it. The resident size is a sawtooth, not a line (the index fills to its
    cap and evicts half of it, a verify pass holds its logits, big documents come and go,
    a trim returns what was freed): between one sample and the next it moves by 100 MB
    with nothing leaking. So two figures, each within RSS_SLACK of the window's:
    - the peak: no later sample above the window's highest (what the workload reaches);
    - the typical size: the median of the last window's length against the window's
      median (a leak raises it however the peaks fall)."""
    after = [r for r in samples if r["minute"] >= warmup_minutes]
    window = [r["rssMB"] for r in after if r["minute"] < 2 * warmup_minutes] or [r["rssMB"] for r in after]
    end = samples[-1]["minute"] if samples else 0
    last = [r["rssMB"] for r in after if r["minute"] >= end - warmup_minutes] or window
    peak, top = max(window, default=None), max((r["rssMB"] for r in after), default=None)
    typical, typical_end = _median(window), _median(last)
    fives: dict[int, list[float]] = {}
    for r in samples:
        fives.setdefault(int(r["minute"] // 5), []).append(r["rssMB"])
    return {
        "rssFirstMB": samples[0]["rssMB"] if samples else None,
        "rssLevelPeakMB": peak,
        "rssMaxAfterWarmupMB": top,
        "rssPeakGrowth": round(top / peak - 1, 4) if peak and top else None,
        "rssLevelMedianMB": typical,
        "rssLastMedianMB": typical_end,
        "rssMedianGrowth": round(typical_end / typical - 1, 4) if typical and typical_end else None,
        "rssPerFiveMinutes": [[_median(v), max(v)] for _, v in sorted(fives.items())],
    }


def summary(soak: Soak, exit_code: int, warmup_minutes: float) -> dict[str, Any]:
    rss = rss_checks(soak.samples, warmup_minutes)
    lag = max((r["loopLagMaxMs"] or 0 for r in soak.samples), default=0)
    gc_ms = max((r.get("gcMaxMs") or 0 for r in soak.samples), default=0)
    out = {
        "minutes": soak.samples[-1]["minute"] if soak.samples else 0,
        "requests": soak.next_id,
        "answered": soak.answered,
        "duplicateAnswers": soak.duplicates,
        "actions": soak.counts,
        "tcpReconnects": len(soak.tcp_exits),
        "tcpExitCodes": sorted(set(map(str, soak.tcp_exits))),
        **rss,
        "loopLagMaxMs": lag,
        "gcMaxMs": gc_ms,
        "exitCode": exit_code,
        "failures": soak.failures,
    }
    checks = {
        "every request answered once": soak.answered == soak.next_id and not soak.duplicates,
        "exit 0 after shutdown": exit_code == 0,
        "every TCP reconnect served and exited": all(c is not None for c in soak.tcp_exits),
        f"RSS peak within {RSS_SLACK:.0%} of its level after {warmup_minutes:.3g} min": rss["rssPeakGrowth"] is not None
        and rss["rssPeakGrowth"] <= RSS_SLACK,
        f"RSS median within {RSS_SLACK:.0%} of its level after {warmup_minutes:.3g} min": rss["rssMedianGrowth"]
        is not None
        and rss["rssMedianGrowth"] <= RSS_SLACK,
        f"loopLagMax under {LAG_LIMIT_MS:.0f} ms": lag < LAG_LIMIT_MS,
        "no other failure": not soak.failures,
    }
    out["checks"] = checks
    return out


def table(out: dict[str, Any]) -> str:
    rows = [
        ("duration", f"{out['minutes']:.1f} min"),
        ("requests (all answered once)", f"{out['requests']} ({out['answered']})"),
        ("TCP reconnects (exit codes)", f"{out['tcpReconnects']} ({', '.join(out['tcpExitCodes'])})"),
        ("RSS first sample", f"{out['rssFirstMB']} MB"),
        ("RSS peak in the window after warm-up (its level)", f"{out['rssLevelPeakMB']} MB"),
        ("RSS max after warm-up", f"{out['rssMaxAfterWarmupMB']} MB ({(out['rssPeakGrowth'] or 0) * 100:+.1f}%)"),
        ("RSS median in that window", f"{out['rssLevelMedianMB']} MB"),
        ("RSS median at the end", f"{out['rssLastMedianMB']} MB ({(out['rssMedianGrowth'] or 0) * 100:+.1f}%)"),
        (
            "RSS per 5 minutes, median / max",
            ", ".join(f"{m:.0f} / {x:.0f}" for m, x in out["rssPerFiveMinutes"]) + " MB",
        ),
        ("loopLagMax", f"{out['loopLagMaxMs']} ms"),
        ("longest garbage collection", f"{out['gcMaxMs']} ms"),
    ]
    lines = ["| figure | value |", "|---|---:|", *[f"| {a} | {b} |" for a, b in rows], "", "| check | |", "|---|---|"]
    lines += [f"| {name} | {'pass' if ok else 'FAIL'} |" for name, ok in out["checks"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=120)
    p.add_argument("--warmup-minutes", type=float, default=None, help="default: 10, or a third of a shorter run")
    p.add_argument("--sample-s", type=float, default=30)
    p.add_argument("--seed", type=int, default=20261206)
    p.add_argument("--model", help="a model directory (default: build the tiny model)")
    p.add_argument("--out", type=Path, help="write the summary and samples here as JSON")
    p.add_argument("--logs", type=Path, help="copy the servers' logs here at the end")
    p.add_argument(
        "--only",
        help=f"comma-separated kinds of event, the rest left out (which one a growth follows): {','.join(KINDS)}",
    )
    args = p.parse_args(argv)
    warmup = args.warmup_minutes if args.warmup_minutes is not None else min(10.0, args.minutes / 3)
    with tempfile.TemporaryDirectory(prefix="speclsp-soak-") as tmp:
        work = Path(tmp)
        model = args.model
        if model is None:
            from speclsp.local import tiny

            model = str(tiny.build(work / "model"))
        soak = Soak(model, work / "ws", args.seed, args.sample_s, only=args.only.split(",") if args.only else None)
        try:
            soak.run(args.minutes)
        except Stop:
            pass
        finally:
            exit_code = soak.finish()
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                for log in (work / "ws").glob("*.log"):
                    shutil.copy(log, args.logs / log.name)
        out = summary(soak, exit_code, warmup)
    if args.out:
        args.out.write_text(json.dumps({**out, "samples": soak.samples}, indent=1))
    print(table(out))
    return 0 if all(out["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
