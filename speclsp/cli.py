"""The `speclsp` command: the language server, and one-shot tools around the same engine.

    speclsp --stdio | --tcp HOST:PORT     run the language server
    speclsp complete PATH --line L --character C [...]
    speclsp models [list | pull NAME | gguf NAME | tiny DIR [--trained]]
    speclsp bench [suite|engine|index|typing|draft|project|replay|peers|precision] [...]
    speclsp demo                          complete a real file with the default model

stdout carries the protocol in server mode, so every log line goes to stderr or to
`--log-file`. Errors exit non-zero with a one-line message on stderr.

This file is one concern (the command line: flags, checks, and each subcommand's entry) at ~480 lines.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import signal
import sys
from pathlib import Path

from . import __version__

log = logging.getLogger("speclsp")
REMOTE_FLAGS = ("backend", "endpoint", "remote_model", "api_key_env")  # `--backend openai` and its settings


class BoundedFormatter(logging.Formatter):
    """Log lines of at most LIMIT characters (tracebacks included): a message that quotes
    what a client sent (a 5 MB URI, a document) must not grow the log by its size."""

    LIMIT = 8192

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if len(line) <= self.LIMIT:
            return line
        return f"{line[: self.LIMIT]}... ({len(line) - self.LIMIT} more characters not logged)"


def setup_logging(verbose: int, log_file: str | None) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(BoundedFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 PID`: every thread's stack to the log (a hang)
        faulthandler.register(signal.SIGUSR1, file=handler.stream or sys.stderr, all_threads=True)
    # transformers and friends are chatty at INFO
    for noisy in ("transformers", "accelerate", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _die(msg: str, code: int = 2) -> int:
    print(f"speclsp: error: {msg}", file=sys.stderr)
    return code


# --- complete ----------------------------------------------------------------------------


def _read_text(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    data = p.read_bytes()  # invalid UTF-8 becomes U+FFFD below, NUL bytes are refused
    if b"\0" in data[:8192]:
        raise ValueError(f"{path} looks binary (NUL bytes); refusing to complete it")
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n")


def cmd_complete(args: argparse.Namespace) -> int:
    from .backend import BackendError
    from .completion.completer import CompletionRequest
    from .completion.context import OpenDocument, split_at
    from .drafting.controller import parse_lookahead
    from .drafting.drafter import parse_drafter
    from .local.registry import ModelError

    draft_model = getattr(args, "draft_model", None)
    try:
        text = _read_text(args.path)
        others = tuple(OpenDocument(p, _read_text(p)) for p in args.open)
        split_at(text, args.line, args.character)  # validate before loading a model
        parse_lookahead(args.lookahead)
        # With a draft model the default is the hybrid (n-grams or the draft model, per step).
        drafter = parse_drafter(getattr(args, "drafter", None) or ("hybrid" if draft_model else "ngram"))
        if drafter != "ngram" and not draft_model:
            raise ValueError(f"--drafter {drafter} needs --draft-model NAME")
    except (OSError, ValueError) as e:
        return _die(str(e))
    from .completion.loader import Choice, load_completer

    say = lambda m: print(f"speclsp: {m}", file=sys.stderr)  # noqa: E731
    try:
        completer = load_completer(Choice.of(args, draft_model=draft_model or ""), progress=say)
    except ModelError as e:
        return _die(str(e))
    except BackendError as e:  # a remote server that answered no (no such model, bad key)
        return _die(str(e), 1)
    if completer.backend.problem:  # a remote server that cannot be reached
        return _die(completer.backend.problem, 1)
    if not args.no_speculation:
        completer.calibrate()  # the rest of the cost grid, within a few seconds (cached)
    req = CompletionRequest(
        path=args.path,
        text=text,
        line=args.line,
        character=args.character,
        other_documents=others,
        max_tokens=args.max_tokens,
        lookahead=args.lookahead,
        speculate=not args.no_speculation,
        drafter=drafter,
    )
    on_text = None
    if args.stream and not args.json:

        def on_text(t: str) -> None:
            print(f"\x1b[2K\r{t.splitlines()[-1] if t else ''}", end="", file=sys.stderr, flush=True)

    try:
        comp = completer.complete(req, on_text=on_text)
    except BackendError as e:
        if args.stream and not args.json:
            print(file=sys.stderr)
        return _die(str(e), 1)
    if args.stream and not args.json:
        print(file=sys.stderr)
    stats = comp.stats.to_dict()
    if args.json:
        out = {"text": comp.text, "raw_text": comp.raw_text, "stats": stats}
        out.update(completer.backend.stats())
        print(json.dumps(out))
    else:
        print(comp.text)
        print("---", file=sys.stderr)
        for k in (
            "backend",
            "model",
            "device",
            "dtype",
            "lookahead",
            "prompt_tokens",
            "reused_tokens",
            "new_tokens",
            "forwards",
            "drafted",
            "accepted",
            "acceptance",
            "ttft_ms",
            "total_ms",
            "tokens_per_s",
            "stop_reason",
        ):
            print(f"{k:>14}: {stats[k]}", file=sys.stderr)
        if stats["draft_sources"]:
            print(f"{'draft_sources':>14}: {stats['draft_sources']}", file=sys.stderr)
        for k, v in completer.backend.stats().items():
            print(f"{k:>14}: {v}", file=sys.stderr)
    return 0


# --- models ------------------------------------------------------------------------------


def _cpu_choice(name: str) -> str:
    """The precision an earlier load measured fastest on this CPU, and why."""
    from .local import precision

    found = precision.cached_cpu_choice(name)
    if found is None:
        return "precision not measured yet (the first load on this CPU measures it; --dtype overrides)"
    return f"{found[0]} — {found[1]}"


def cmd_models(args: argparse.Namespace) -> int:
    from .local import registry as models

    if args.action in (None, "list"):
        rows = models.status()
        print(f"cache: {models.cache_dir()}")
        for r in rows:
            mark = "*" if r["default"] else " "
            state = f"cached ({r['size_mb']} MB)" if r["cached"] else "not cached"
            print(f"{mark} {r['name']:<22} {state:<20} {r['description']}")
            if r["cached"]:
                print(f"    on this CPU: {_cpu_choice(r['name'])}")
        print("  (any local model directory, .gguf file, or Hugging Face id also works with --model)")
        return 0
    if args.action == "gguf":
        try:
            print(models.gguf(args.target or models.DEFAULT_MODEL))
        except models.ModelError as e:
            return _die(str(e))
        return 0
    if args.action == "pull":
        if not args.target:
            return _die("models pull needs a NAME")
        try:
            print(models.pull(args.target))
        except models.ModelError as e:
            return _die(str(e))
        return 0
    if args.action == "tiny":
        if not args.target:
            return _die("models tiny needs a DIR")
        if args.trained:  # trained in-process until it reproduces its corpus (seconds)
            from .tools import tiny_trained

            print(tiny_trained.build_trained(args.target))
            return 0
        from .local import tiny

        print(tiny.build(args.target))
        return 0
    return _die(f"unknown models action {args.action!r}")


# --- bench -------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from .backend import BackendError
    from .local.registry import ModelError

    try:
        if getattr(args, "backend", None) == "openai":  # local engine vs remote servers
            from .bench import remote as bench_remote

            bench_remote.main(args)
        elif args.workload == "suite":
            from .bench import suite

            suite.main(args)
        elif args.workload == "engine":
            from .bench import engine as bench_engine

            bench_engine.main(args)
        elif args.workload == "index":
            from .bench import index as bench_index

            bench_index.run_index_bench()
        elif args.workload == "typing":
            from .bench import typing as bench_typing

            bench_typing.main(args)
        elif args.workload == "draft":
            from .bench import draft as bench_draft

            bench_draft.main(args)
        elif args.workload == "project":
            from .bench import project

            project.main(args)
        elif args.workload == "precision":
            from .bench import precision

            precision.main(args)
        elif args.workload == "peers":
            from .bench import peers

            peers.main(args)
        elif args.workload == "replay":
            from .bench import replay

            replay.main(args)
        else:
            return _die(f"unknown benchmark {args.workload!r}")
    except (ModelError, BackendError) as e:
        return _die(str(e))
    return 0


# --- demo --------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """Complete a real file (speclsp's demo file) with the default model."""
    from .data import demo_path

    demo = demo_path()
    text = demo.read_text()
    marker = "    def area(self):\n"
    line = text[: text.rindex(marker)].count("\n")
    ns = argparse.Namespace(
        path=str(demo),
        line=line,
        character=len("    def area(self):"),
        open=[],
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        max_tokens=args.max_tokens,
        lookahead="tree",
        no_speculation=False,
        stream=True,
        json=False,
        draft_model=None,
        drafter=None,
    )
    print(f"speclsp demo: completing {demo.name} at line {line} (the end of `def area(self):`)", file=sys.stderr)
    return cmd_complete(ns)


# --- server ------------------------------------------------------------------------------


def parse_tcp_address(value: str) -> tuple[str, int]:
    """HOST:PORT, :PORT or PORT (host 127.0.0.1); [::1]:PORT for IPv6. Raises ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--tcp {value!r}: expected HOST:PORT with PORT in 0..65535")
    return host, int(port)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def run_server(args: argparse.Namespace) -> int:
    from .lsp import memory

    memory.limit_arenas()  # before any thread allocates: see memory.limit_arenas
    from .lsp import server

    try:
        server.config_from_flags(_server_options(args))  # checked before anything starts
    except ValueError as e:
        return _die(str(e))

    if args.tcp:
        try:
            host, port = parse_tcp_address(args.tcp)
        except ValueError as e:
            return _die(str(e))

        def announce(bound_host: str, bound_port: int) -> None:
            if not is_loopback(host):  # once bound: an address that cannot be bound gets one error line only
                log.warning(
                    "listening on %s: reachable from other machines, and the protocol has no authentication", host
                )
            reach = "loopback only" if is_loopback(host) else "REACHABLE FROM OTHER MACHINES, no authentication"
            print(f"speclsp: listening on {bound_host}:{bound_port} ({reach}; one client)", file=sys.stderr, flush=True)

        server.serve_tcp(host, port, announce=announce, **_server_options(args))
    else:
        server.serve_stdio(**_server_options(args))
    return 0


def _server_options(args: argparse.Namespace) -> dict[str, str | None]:
    """Config fields given on the command line; the editor's options overlay them."""
    return {f: getattr(args, f, None) for f in ("model", "device", "dtype", *REMOTE_FLAGS)}


def _common_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    def default(v):
        return argparse.SUPPRESS if suppress else v

    p.add_argument("--model", default=default(None), help="registered name, local directory, .gguf or Hugging Face id")
    p.add_argument("--device", default=default(None), help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument(
        "--dtype",
        default=default(None),
        help="auto (default: on a CPU the fastest measured here), bfloat16, float16, float32, int8 (CPU: int8 weights)",
    )
    p.add_argument(
        "--backend",
        default=default(None),
        choices=["local", "openai"],
        help="where generation runs: local (default) or openai, an OpenAI-compatible server such as vLLM",
    )
    p.add_argument(
        "--endpoint",
        default=default(None),
        metavar="URL",
        help="openai: the API's base URL, e.g. http://127.0.0.1:8000/v1",
    )
    p.add_argument(
        "--remote-model",
        default=default(None),
        metavar="NAME",
        help="openai: the served model's name (default: the server's first)",
    )
    p.add_argument(
        "--api-key-env",
        default=default(None),
        metavar="VAR",
        help="openai: the environment variable that holds the API key (its name, not the key)",
    )
    p.add_argument("--log-file", default=default(None), help="log here instead of stderr")
    p.add_argument("-v", "--verbose", action="count", default=default(0))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="speclsp", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"speclsp {__version__}")
    p.add_argument("--stdio", action="store_true", help="run the language server over stdin/stdout")
    p.add_argument("--tcp", metavar="HOST:PORT", help="run the language server on TCP (loopback by default)")
    _common_options(p, suppress=False)
    sub = p.add_subparsers(dest="command")
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, suppress=True)  # so `speclsp complete F --model M` works too

    c = sub.add_parser("complete", parents=[common], help="complete a file at a position and print the result")
    c.add_argument("path")
    c.add_argument("--line", type=int, required=True, help="0-based line")
    c.add_argument("--character", type=int, required=True, help="0-based character")
    c.add_argument("--max-tokens", type=int, default=64)
    c.add_argument("--open", action="append", default=[], metavar="OTHER_PATH", help="another open document")
    c.add_argument(
        "--lookahead", default="tree", help="tree (token trees, the default) | auto (chains) | heuristic | fixed:K"
    )
    c.add_argument(
        "--draft-model",
        default=None,
        metavar="NAME",
        help="a smaller model with the same tokenizer that drafts (off by default)",
    )
    c.add_argument(
        "--drafter",
        default=None,
        choices=["ngram", "model", "hybrid"],
        help="where drafts come from (default: hybrid with --draft-model, else ngram)",
    )
    c.add_argument("--no-speculation", action="store_true", help="plain greedy decoding (the baseline)")
    c.add_argument("--stream", action="store_true", help="show the completion as it grows")
    c.add_argument("--json", action="store_true", help="print one JSON object")

    m = sub.add_parser("models", parents=[common], help="list, pull or build models")
    m.add_argument(
        "action",
        nargs="?",
        choices=["list", "pull", "gguf", "tiny"],
        help="list (default), pull NAME, gguf NAME (the published GGUF file, e.g. for llama.cpp), tiny DIR",
    )
    m.add_argument("target", nargs="?", help="model name (pull) or directory (tiny)")
    m.add_argument(
        "--trained",
        action="store_true",
        help="tiny: a model trained to reproduce its built-in corpus instead of random weights",
    )

    b = sub.add_parser("bench", parents=[common], help="benchmarks that print tables")
    from .bench import add_arguments

    add_arguments(b)

    d = sub.add_parser("demo", parents=[common], help="complete a real file with the default model")
    d.add_argument("--max-tokens", type=int, default=96)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.log_file)
    if args.stdio or args.tcp:
        return run_server(args)
    if args.command == "complete":
        return cmd_complete(args)
    if args.command == "models":
        return cmd_models(args)
    if args.command == "bench":
        return cmd_bench(args)
    if args.command == "demo":
        return cmd_demo(args)
    build_parser().print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
