"""Cursors where the tiny trained model (speclsp.tools.tiny_trained) must suggest an exact
text: the corpus cut after the indentation of a method's first body line, and the body it
continues with. The server, remote, vLLM, reliability and editor tests complete at these."""

from __future__ import annotations

from speclsp.tools.tiny_trained import CORPUS, WINDOW

MAX_TOKENS = WINDOW  # the training checks this many tokens at every cursor


def at_body(header: str) -> tuple[str, str]:
    """(document, expected suggestion) of the trained model for a cursor on the first line
    of the body under `header` in `tiny_trained.CORPUS`, after its indentation, the
    document ending there: the body up to its blank line, the first line's indentation
    removed."""
    start = CORPUS.index(header + "\n") + len(header) + 1
    end = CORPUS.index("\n\n", start)
    body = CORPUS[start:end]
    indent = len(body) - len(body.lstrip(" "))
    return CORPUS[: start + indent], body[indent:]


AREA = at_body("    def area(self):")
DESCRIBE = at_body("    def describe(self):")  # one long line
SCALE = at_body("    def scale(self, factor):")  # three lines
