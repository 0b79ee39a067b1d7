"""Files shipped with the package: the demo file (unfinished Python on purpose, so it is
stored under a non-`.py` name and never byte-compiled on install)."""

from __future__ import annotations

import tempfile
from importlib.resources import files
from pathlib import Path

DEMO_NAME = "demo_file.py"


def demo_text() -> str:
    """The demo file's text: a class whose methods repeat a pattern, ending in `def area(self):`."""
    return (files(__name__) / "demo_file.py.txt").read_text(encoding="utf-8")


def demo_path() -> Path:
    """The demo file written out as `demo_file.py` (in a temporary folder), for the commands
    that complete or type a file by path."""
    folder = Path(tempfile.gettempdir()) / "speclsp-demo"
    folder.mkdir(exist_ok=True)
    path = folder / DEMO_NAME
    text = demo_text()
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        tmp = folder / f".{DEMO_NAME}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return path
