"""Drafters: where speculative tokens come from.

A drafter proposes up to `max_tokens` token ids that are likely to follow a token
sequence. The engine verifies the proposal with one forward pass of the model and keeps
only what greedy decoding agrees with, so a drafter can never change the output, only the
speed. Drafters import no torch: they work on plain token ids.

This module holds the interface and the simplest drafter, prompt lookup: the longest
suffix of the current sequence that also occurs earlier in the sequence itself (the
prompt, which includes the text after the cursor, plus what was generated so far).
The workspace drafter lives in `workspace.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .tree import DraftTree

MAX_DRAFT = 64  # the longest draft any drafter proposes; the verify pass grows with it


@dataclass(frozen=True)
class Draft:
    """A proposal: tokens, where they came from, and how well the context matched."""

    tokens: tuple[int, ...] = ()
    source: str = "none"  # e.g. "prompt", "suffix", "document", "workspace", "history"
    match_len: int = 0  # tokens of context that matched before the drafted continuation
    # How strongly the index agreed on each drafted token (1.0 = every match agreed).
    # Drafters that cannot tell leave it empty.
    agreement: tuple[float, ...] = ()

    def __len__(self) -> int:
        return len(self.tokens)


NO_DRAFT = Draft()


class Drafter(Protocol):
    """Proposes continuations of a token sequence."""

    def begin(self, prompt_ids: Sequence[int]) -> None:
        """A new generation starts with this prompt."""

    def propose(self, ids: Sequence[int], max_tokens: int) -> Draft:
        """Up to `max_tokens` tokens likely to follow `ids` (prompt + generated so far)."""


@runtime_checkable
class TreeDrafter(Drafter, Protocol):
    """A drafter that can also propose a token tree (`workspace.WorkspaceDrafter`)."""

    def propose_tree(self, ids: Sequence[int], max_nodes: int, max_depth: int = MAX_DRAFT) -> DraftTree:
        """Up to `max_nodes` candidate tokens after `ids`, as a trie of continuations."""


@dataclass
class NullDrafter:
    """Proposes nothing: the engine then decodes one token per forward (plain greedy)."""

    def begin(self, prompt_ids: Sequence[int]) -> None:
        pass

    def propose(self, ids: Sequence[int], max_tokens: int) -> Draft:
        return NO_DRAFT


@dataclass
class PromptLookupDrafter:
    """Longest-suffix match of the sequence inside itself (prompt + generated tokens).

    Keeps a map from each `key_len`-gram to the positions right after it, appended to as
    the sequence grows, so one lookup costs a dict access plus a backwards extension over
    the candidates. Among candidates the longest match wins, then the most recent.
    """

    key_len: int = 2
    max_match: int = 64
    max_candidates: int = 64  # most recent occurrences examined per lookup
    source: str = "prompt"
    _ids: list[int] = field(default_factory=list)
    _next: dict[tuple[int, ...], list[int]] = field(default_factory=dict)
    _indexed: int = 0  # positions < _indexed have their key recorded

    def begin(self, prompt_ids: Sequence[int]) -> None:
        self._ids = list(prompt_ids)
        self._next = {}
        self._indexed = 0

    def _sync(self, ids: Sequence[int]) -> None:
        n = len(self._ids)
        if len(ids) < n or list(ids[: min(n, len(ids))]) != self._ids[: min(n, len(ids))]:
            self.begin(ids)  # not an extension of what we indexed: start over
        elif len(ids) > n:
            self._ids.extend(ids[n:])
        k = self.key_len
        # Record key ending at position p-1 -> continuation starts at p. The newest key
        # (ending at the last token) is the query itself, so it is left out until a token
        # follows it.
        for p in range(max(self._indexed, k), len(self._ids)):
            self._next.setdefault(tuple(self._ids[p - k : p]), []).append(p)
        self._indexed = max(self._indexed, len(self._ids))

    def propose(self, ids: Sequence[int], max_tokens: int) -> Draft:
        if max_tokens <= 0 or len(ids) < self.key_len:
            return NO_DRAFT
        self._sync(ids)
        seq = self._ids
        end = len(seq)
        cands = self._next.get(tuple(seq[end - self.key_len :]))
        if not cands:
            return NO_DRAFT
        best_pos, best_len = -1, 0
        for p in reversed(cands[-self.max_candidates :]):
            m = self.key_len
            while m < self.max_match and p - m - 1 >= 0 and seq[p - m - 1] == seq[end - m - 1]:
                m += 1
            if m > best_len:
                best_pos, best_len = p, m
        if best_pos < 0 or best_pos >= end:
            return NO_DRAFT
        # Copy the continuation; where it runs into the end of the sequence, keep copying
        # from what was just drafted (a repeating pattern continues, as in LZ77).
        out: list[int] = []
        for j in range(best_pos, best_pos + max_tokens):
            out.append(seq[j] if j < end else out[j - end])
        return Draft(tokens=tuple(out), source=self.source, match_len=best_len)


DRAFTERS = ("ngram", "model", "hybrid")  # n-grams only; a draft model only; per step the better


def parse_drafter(spec: str) -> str:
    """A drafter kind from its name, or ValueError saying which names there are."""
    spec = spec.strip().lower()
    if spec not in DRAFTERS:
        raise ValueError(f"bad drafter {spec!r}: expected one of {', '.join(DRAFTERS)}")
    return spec
