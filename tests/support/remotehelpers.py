"""Helpers of the remote-backend tests (against tests/support/fakeopenai.py or a real vLLM):
a made-up API key, a free port, the server's options for the remote backend, what the
editor was told and suggested, and `speclsp complete` with the remote backend."""

from __future__ import annotations

import socket
import subprocess
import sys

import conftest
from trainedcases import AREA

KEY = "sk-test-7f3a9c1e5b"  # a made-up key: it must reach the server and nowhere else
URI = "file:///w/shapes.py"


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remote(endpoint: str, **more) -> dict:
    return {"backend": "openai", "endpoint": endpoint, "remoteModel": "fake", "maxTokens": 48, **more}


def messages(editor) -> list[str]:
    return [m.message for m in editor.client.messages]


async def inline_text(editor, uri: str = URI, **kw) -> str:
    result = await editor.inline(uri, invoked=True, **kw)
    return result.items[0].insert_text if result and result.items else ""


def complete_cli(model_dir, endpoint: str, *more: str) -> subprocess.CompletedProcess:
    """`speclsp complete` with the remote backend at `endpoint`, the cursor at the end of AREA's document."""
    doc = model_dir.parent / "shapes-remote.py"
    doc.write_text(AREA[0])
    lines = AREA[0].split("\n")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "speclsp",
            "complete",
            str(doc),
            "--line",
            str(len(lines) - 1),
            "--character",
            str(len(lines[-1])),
            "--model",
            str(model_dir),
            "--backend",
            "openai",
            "--endpoint",
            endpoint,
            *more,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=conftest.SERVER_ENV,
    )
