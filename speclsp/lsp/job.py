"""Where a completion request points, as plain values: `locate` is pure.

`Session` answers a request in named steps (refuse, locate, from the cache, debounce and
start, wait or restart, answer); the first of them that needs the document's text is
`locate`, which turns the client's (line, character) into a `Cursor`: the code-point
offset, the text before and after it, and the word being typed, in client units as the
answer needs them. A generation the session starts is a `GenerationJob` (plain values:
what the model worker runs, and what the log can say of it), run by `run_job`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backend import CancelToken
from ..completion.completer import Completion, CompletionRequest
from .documents import Document
from .positions import from_codepoints

log = logging.getLogger(__name__)

INDEX_WAIT_S = 2.0  # a generation waits at most this long for the index to catch up with its request


def word_before(line: str, col: int) -> str:
    """The identifier characters that end at `col` (linear in their length, however long the line)."""
    i = col
    while i > 0 and (line[i - 1].isalnum() or line[i - 1] == "_"):
        i -= 1
    return line[i:col]


@dataclass(frozen=True)
class Cursor:
    """A request's position in one version of a document."""

    offset: int  # code points from the start of the text
    prefix: str  # the text before the cursor
    suffix: str  # and after it
    line: int  # client units, as the request gave them
    character: int  # client units, clamped to the line's text
    word: str  # the identifier characters just before the cursor
    word_start: int  # client units: where that word starts on the line
    version: int

    def where(self) -> dict:
        """The answer's position fields (`session.Answer`)."""
        return dict(
            line=self.line, character=self.character, version=self.version, word=self.word, word_start=self.word_start
        )


def locate(doc: Document, line: int, character: int, encoding: str) -> Cursor:
    """The cursor at (line, character) in client units; `line` must be within the document."""
    lines = doc.lines
    offset = lines.offset_from_client(line, character, encoding)
    line_text = lines.line(line)
    col = offset - lines.starts[line]
    word = word_before(line_text, col)
    return Cursor(
        offset,
        doc.text[:offset],
        doc.text[offset:],
        line,
        from_codepoints(line_text, col, encoding),
        word,
        from_codepoints(line_text, col - len(word), encoding),
        doc.version,
    )


@dataclass(frozen=True)
class GenerationJob:
    """One generation as the model worker runs it."""

    gen_id: int
    uri: str
    offset: int  # the cursor, code points
    request: CompletionRequest
    index_mark: int  # the index worker's updates submitted when the request came
    policy: Any  # the session's long-lived lookahead policy (it keeps learning)

    def describe(self) -> str:
        r = self.request
        return (
            f"gen {self.gen_id}: {len(r.text)} chars of context, max {r.max_tokens} tokens, "
            f"lookahead {r.lookahead}, drafter {r.drafter}"
        )


def run_job(
    job: GenerationJob, completer: Any, indexer: Any, indexes: Any, on_text: Callable[[str], None], cancel: CancelToken
) -> Completion:
    """On the model worker: wait for the index as of the request (at most INDEX_WAIT_S),
    build the drafter there (it takes the index's lock, which the loop must never wait
    for), and complete."""
    if not indexer.wait_for(job.index_mark, timeout=INDEX_WAIT_S):
        log.info("gen %d: the index is %d updates behind; drafting from what it has", job.gen_id, indexer.pending())
    drafter = indexes.drafter_for(job.uri, job.offset)
    return completer.complete(job.request, drafter=drafter, policy=job.policy, cancel=cancel, on_text=on_text)
