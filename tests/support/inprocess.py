"""The in-process pipeline's answer, which the real server's must equal (speculative
decoding is lossless, and the server adds no text of its own)."""

from __future__ import annotations


def expected_completion(tiny_lm, text: str, max_tokens: int = 24, others=()) -> str:
    """What the in-process pipeline suggests at the end of `text`."""
    from speclsp.completion.completer import Completer, CompletionRequest
    from speclsp.local.backend import LocalBackend

    lines = text.split("\n")
    req = CompletionRequest(
        "doc.py", text, len(lines) - 1, len(lines[-1]), other_documents=others, max_tokens=max_tokens
    )
    return Completer(LocalBackend(tiny_lm)).complete(req).text
