"""Prompt building: what the model sees for a completion at a cursor.

Order matters for speed. The engine reuses the KV cache of the longest common token
prefix with the previous prompt, so the parts that change least come first: snippets of
other open files (chosen by identifier overlap with the code around the cursor, kept in a
stable order), then the current file's prefix (whose start moves in coarse line steps, not
with every keystroke), then the short suffix. For models with fill-in-the-middle tokens
the template is, in Qwen2.5-Coder's spelling,

    [<|repo_name|>repo\\n <|file_sep|>other.py\\n snippet\\n ...] [<|file_sep|>this.py\\n]
    <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>

and a plain prefix otherwise. Other families spell the markers their own way
(`fim.FAMILIES`, detected from the tokenizer's special tokens by `fim.detect_fim`); a
family without a file separator gets the snippets as "# path" comments before its prefix
marker. Budgets are in tokens.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePath

CHARS_PER_TOKEN = 3  # generous estimate used before tokenizing, so we tokenize little
PREFIX_LINE_STEP = 16  # the prefix starts on a multiple of this many lines (cache-friendly)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")


@dataclass(frozen=True)
class OpenDocument:
    path: str
    text: str


@dataclass(frozen=True)
class PromptBudget:
    max_prompt_tokens: int = 2048  # everything together
    suffix_tokens: int = 96  # text after the cursor: recomputed on every keystroke, keep small
    context_tokens: int = 512  # snippets of other open files
    snippet_lines: int = 24


@dataclass(frozen=True)
class FimTokens:
    """The ids of one tokenizer's FIM markers and how its family spaces them.

    `prefix`, `suffix`, `middle` are the markers in prompt order (DeepSeek's begin, hole and
    end). `bos` goes first where the family's own prompts start with it. `spaced` is
    CodeLlama's `<PRE> {prefix} <SUF>{suffix} <MID>`: the prefix is encoded after a space
    and the suffix without the tokenizer's leading space; `space_before_suffix`/`_middle`
    add that space as text where the marker token does not carry it (`<SUF>`, not `▁<SUF>`).
    The defaults are Qwen2.5-Coder's template.
    """

    prefix: int
    suffix: int
    middle: int
    file_sep: int | None = None
    repo_name: int | None = None
    family: str = "qwen"
    bos: int | None = None
    spaced: bool = False
    space_before_suffix: bool = False
    space_before_middle: bool = False


@dataclass(frozen=True)
class Prompt:
    ids: tuple[int, ...]
    prefix: str  # the part of the document before the cursor that the prompt holds
    suffix: str  # the part after the cursor that the prompt holds
    suffix_ids: tuple[int, ...]
    context_tokens: int  # tokens spent on other files
    snippets: tuple[str, ...]  # "path:line" of each snippet used


def split_at(text: str, line: int, character: int) -> tuple[str, str]:
    """Split a document at a 0-based (line, character-in-code-points) position, its lines
    split at "\\n" only ("\\r" is part of a line: `completer.build_request` counts the same way).

    Raises ValueError with a clear message when the position is outside the document.
    """
    lines = text.split("\n")
    if line < 0 or line >= len(lines):
        raise ValueError(f"line {line} is out of range: the document has {len(lines)} line(s) (0-based)")
    if character < 0 or character > len(lines[line]):
        raise ValueError(f"character {character} is out of range: line {line} has {len(lines[line])} character(s)")
    offset = sum(len(s) + 1 for s in lines[:line]) + character
    return text[:offset], text[offset:]


def line_ending(prefix: str, suffix: str) -> str:
    """The line ending a document uses at the cursor: the last one before it, else the
    first after it, else "\n" (a mixed document follows the line the user is on)."""
    i = max(prefix.rfind("\n"), prefix.rfind("\r"))
    if i >= 0:
        if prefix[i] == "\n":
            return "\r\n" if i > 0 and prefix[i - 1] == "\r" else "\n"
        return "\r\n" if suffix.startswith("\n") else "\r"
    for j, ch in enumerate(suffix):
        if ch == "\n":
            return "\n"
        if ch == "\r":
            return "\r\n" if suffix[j + 1 : j + 2] == "\n" else "\r"
    return "\n"


def lf(text: str) -> str:
    """`text` with every line ending as "\n": the model sees CRLF and CR documents as it
    saw code in training (a CRLF twin of a document got a different, broken suggestion)."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _fit_prefix(prefix: str, room: int, encode: Callable[[str], list[int]]) -> tuple[str, list[int]]:
    """The longest tail of `prefix` that fits `room` tokens, starting on a line whose
    number is a multiple of PREFIX_LINE_STEP. The start line then stays put while the user
    types, so the cached prompt prefix stays valid; it jumps only every few lines."""
    lines = prefix.split("\n")
    total = len(prefix)
    start = 0
    # Cheap estimate first (no tokenizing), then confirm with the tokenizer.
    while start < len(lines) - 1 and total > room * CHARS_PER_TOKEN:
        step = lines[start : start + PREFIX_LINE_STEP]
        total -= sum(len(s) + 1 for s in step)
        start += len(step)
    while True:
        start = min(start, len(lines) - 1)
        text = "\n".join(lines[start:])
        ids = encode(text)
        if len(ids) <= room or start >= len(lines) - 1:
            break
        start += PREFIX_LINE_STEP
    if len(ids) > room:  # one enormous line: keep its end
        ids = ids[-room:]
    return text, ids


def _bare_encoder(encode: Callable[[str], list[int]]) -> Callable[[str], list[int]]:
    """`encode` without the space a SentencePiece tokenizer puts before the text (its "dummy
    prefix"), as CodeLlama's reference code encodes the suffix (`encode_infilling`): the
    text is encoded after a newline and the newline's ids are dropped. Where the newline
    merges with the text (byte-level BPE, which adds no such space), plain `encode`."""
    newline = encode("\n")

    def bare(text: str) -> list[int]:
        ids = encode("\n" + text)
        return ids[len(newline) :] if ids[: len(newline)] == newline else encode(text)

    return bare


def _trim_suffix(suffix: str, max_chars: int) -> str:
    if len(suffix) <= max_chars:
        return suffix
    cut = suffix.rfind("\n", 0, max_chars)
    return suffix[: cut + 1] if cut > 0 else suffix[:max_chars]


def _identifiers(text: str) -> set[str]:
    return set(_IDENT.findall(text))


def select_snippets(
    others: Sequence[OpenDocument], around_cursor: str, budget_chars: int, lines_per_snippet: int
) -> list[tuple[str, int, str]]:
    """Chunks of other files that share the most identifiers with the code near the cursor.

    Returned in (path, start line) order, not score order, so the prompt stays the same as
    long as the same chunks are chosen.
    """
    want = _identifiers(around_cursor)
    if not want or budget_chars <= 0:
        return []
    scored = []
    for doc in others:
        lines = doc.text.split("\n")
        for start in range(0, len(lines), lines_per_snippet):
            chunk = "\n".join(lines[start : start + lines_per_snippet])
            score = len(want & _identifiers(chunk))
            if score:
                scored.append((score, doc.path, start, chunk))
    scored.sort(key=lambda s: (-s[0], s[1], s[2]))
    chosen, used = [], 0
    for _, path, start, chunk in scored:
        if used + len(chunk) > budget_chars:
            continue
        chosen.append((path, start, chunk))
        used += len(chunk)
    chosen.sort(key=lambda c: (c[0], c[1]))
    return chosen


def build_prompt(
    encode: Callable[[str], list[int]],
    fim: FimTokens | None,
    path: str,
    prefix: str,
    suffix: str,
    others: Sequence[OpenDocument] = (),
    budget: PromptBudget = PromptBudget(),
) -> Prompt:
    """The token ids for a completion at the boundary between `prefix` and `suffix`."""
    encode_prefix = encode_suffix = encode
    space: list[int] = []
    if fim is not None and fim.spaced:
        bare = _bare_encoder(encode)
        encode_prefix, encode_suffix = (lambda t: bare(" " + t) if t else []), bare
        space = bare(" ")
    suffix = _trim_suffix(suffix, budget.suffix_tokens * CHARS_PER_TOKEN) if fim else ""
    suffix_ids = encode_suffix(suffix)[: budget.suffix_tokens] if suffix else []
    around = "\n".join(prefix.split("\n")[-12:-1]) or prefix[-400:]
    snippets = select_snippets(others, around, budget.context_tokens * CHARS_PER_TOKEN, budget.snippet_lines)

    ctx_ids: list[int] = []
    names: list[str] = []
    if snippets and fim and fim.file_sep is not None:
        if fim.repo_name is not None:
            ctx_ids += [fim.repo_name] + encode("workspace\n")
        for p, start, chunk in snippets:
            ctx_ids += [fim.file_sep] + encode(f"{p}\n{chunk}\n")
            names.append(f"{p}:{start}")
        ctx_ids += [fim.file_sep] + encode(f"{PurePath(path).name}\n")
    elif snippets:
        for p, start, chunk in snippets:
            ctx_ids += encode(f"# {p}\n{chunk}\n\n")
            names.append(f"{p}:{start}")
    ctx_ids = ctx_ids[: budget.context_tokens + 64]

    head: list[int] = [fim.bos] if fim is not None and fim.bos is not None else []
    before_suffix = space if fim is not None and fim.space_before_suffix else []
    before_middle = space if fim is not None and fim.space_before_middle else []
    extra = len(head) + len(before_suffix) + len(before_middle)
    room = max(16, budget.max_prompt_tokens - len(ctx_ids) - len(suffix_ids) - 3 - extra)
    prefix, prefix_ids = _fit_prefix(prefix, room, encode_prefix)
    if fim:
        ids = (
            head
            + ctx_ids
            + [fim.prefix]
            + prefix_ids
            + before_suffix
            + [fim.suffix]
            + suffix_ids
            + before_middle
            + [fim.middle]
        )
    else:
        ids = ctx_ids + prefix_ids
    return Prompt(tuple(ids), prefix, suffix, tuple(suffix_ids), len(ctx_ids), tuple(names))


# --- what the server hands to the prompt builder ----------------------------------------

MAX_OTHER_DOCUMENTS = 16  # most recently edited documents offered as prompt context
MAX_OTHER_CHARS = 2_000_000  # and at most this much of their text (snippet search scans it all)


def prompt_window(text: str, starts: Sequence[int], offset: int, budget_tokens: int) -> tuple[int, int]:
    """The slice [start, end) of `text` that the prompt for a cursor at `offset` can use.

    Building a prompt tokenizes what it is given, so a 1 MB document (or one long line)
    must not be handed over whole. The slice starts on a line that is a multiple of
    PREFIX_LINE_STEP and holds at least twice the characters the prefix budget can take and
    the 12 lines before the cursor, so `build_prompt` chooses exactly the prompt it would
    choose from the whole text. Only when those lines are themselves enormous does the
    slice start inside a line. `starts` are the text's line starts (positions.Lines).
    """
    need = 2 * budget_tokens * CHARS_PER_TOKEN
    end = min(len(text), offset + need)
    if offset <= need:
        return 0, end
    cursor_line = bisect_right(starts, offset) - 1
    line = min(bisect_right(starts, offset - need) - 1, max(0, cursor_line - 12))
    line -= line % PREFIX_LINE_STEP
    start = starts[line]
    if offset - start > 4 * need:  # very long lines: cut inside one
        start = offset - need
    return start, end


def choose_other_documents(candidates: Iterable[OpenDocument]) -> tuple[OpenDocument, ...]:
    """The documents offered as context: of the first MAX_OTHER_DOCUMENTS of `candidates`
    (most recently edited first), those that fit in MAX_OTHER_CHARS together."""
    chosen: list[OpenDocument] = []
    chars = 0
    for doc in list(candidates)[:MAX_OTHER_DOCUMENTS]:
        if chars + len(doc.text) > MAX_OTHER_CHARS:
            continue
        chosen.append(doc)
        chars += len(doc.text)
    return tuple(chosen)
