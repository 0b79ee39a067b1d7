"""Benchmarks: commands that print tables and write reports."""


def add_arguments(p) -> None:
    """`speclsp bench`'s arguments (its parser comes from speclsp.cli)."""
    p.add_argument(
        "workload",
        nargs="?",
        default="suite",
        choices=["suite", "engine", "index", "typing", "draft", "project", "replay", "peers", "precision"],
        help="suite (default): every workload and the report; or one part; project: predict "
        "another device's tokens/s from an engine report and --costs; replay: drafting "
        "policies replayed against greedy output, with bounds; peers: against llama.cpp's "
        "llama-server on the same prompts; precision: float32, int8 and bfloat16 here, speed and quality",
    )
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--quick", action="store_true", help="fewer prompts")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs per system and prompt, taken in turn across the systems; the fastest counts",
    )
    p.add_argument("--repo", default=None, help="git repository whose commits give edit-replay cases")
    p.add_argument("--commits", type=int, default=20, help="newest non-merge commits to replay")
    p.add_argument("--max-cases", type=int, default=24, help="edit-replay cases at most")
    p.add_argument(
        "--draft-model", default=None, help="also compare transformers assisted generation with this draft model"
    )
    p.add_argument("--out", default="bench-out", help="directory for the JSON report")
    p.add_argument(
        "--file", default=None, help="typing: the file to type (default: textwrap.py from the standard library)"
    )
    p.add_argument("--cps", type=float, default=8.0, help="typing: characters per second")
    p.add_argument("--line-pause", type=float, default=1.0, help="typing: seconds of pause after each newline")
    p.add_argument("--chars", type=int, default=None, help="typing: keystrokes to replay (default 240)")
    p.add_argument("--start", type=int, default=None, help="typing: character offset where typing starts")
    p.add_argument("--no-stream", action="store_true", help="typing: a client without streaming updates")
    p.add_argument("--server-log", default=None, help="typing: the server's log file (-v)")
    p.add_argument(
        "--lookahead", default=None, help="typing: the server's lookahead option (default: the server's default)"
    )
    p.add_argument("--costs", default=None, help="project: verify costs from scripts/gpu-profile.sh")
    p.add_argument("--report", default=None, help="project: the engine report to replay (default: OUT/engine.json)")
    p.add_argument("--no-typing", action="store_true", help="--backend openai: skip the typing replays")
    p.add_argument(
        "--llama-server", default=None, metavar="PATH", help="peers: llama.cpp's llama-server (scripts/peers.sh llama)"
    )
    p.add_argument(
        "--gguf", default=None, help="peers: the GGUF llama-server serves (default: the model's own, from its wheels)"
    )
    p.add_argument("--threads", default="1,2", help="peers: thread counts, each for both sides (default 1,2)")
    p.add_argument("--llama-modes", default="greedy,ngram-simple,ngram-mod", help="peers: llama-server modes to run")
    p.add_argument(
        "--dtypes", default="float32,int8,bfloat16", help="precision: the precisions, the first is the reference"
    )
    p.add_argument("--baseline-dtype", default=None, help="peers: also run greedy in this precision (e.g. bfloat16)")
