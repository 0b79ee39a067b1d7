"""Workspace folders and one n-gram index per folder: where a document's drafts come from.

`Folders` is the one list of workspace folders: the server's document store asks it which
folder holds a document, and `WorkspaceIndexes` routes each document to its folder's index
with it (the longest folder prefix of the URI wins; anything else goes to a default index).

The indexes tokenize with the model's tokenizer, so they exist only once a backend is
attached (`attach`); documents opened before are indexed then, and a new model means new
indexes. Until then every call is a no-op and `drafter_for` drafts from the prompt alone.
Accepted and generated completions join the history of their document's folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .drafter import Drafter, PromptLookupDrafter
from .index import DEFAULT_MAX_TOKENS, NgramIndex
from .tokens import TokenizeFn, is_tokenize_fn, make_tokenize
from .workspace import WorkspaceDrafter

log = logging.getLogger(__name__)

MAX_HISTORY_CHARS = 8192  # an accepted completion is a few lines; more is not a completion
REMOVED_MIN_CHARS = 12  # text an edit removed, shorter than this (backspaces, a word), is not remembered


def worth_remembering(removed: str) -> bool:
    """Whether text an edit removed joins the drafting history (`add_history`)."""
    return len(removed) >= REMOVED_MIN_CHARS and len(removed.strip()) >= REMOVED_MIN_CHARS


def _norm(uri: str) -> str:
    return uri.rstrip("/")


class Folders:
    """The workspace folders, as URIs without a trailing slash, in the order they came."""

    def __init__(self, uris: Iterable[str] = ()) -> None:
        self._uris: list[str] = []
        for uri in uris:
            self.add(uri)

    def add(self, uri: str) -> bool:
        """True if `uri` was not a folder yet."""
        if _norm(uri) in self._uris:
            return False
        self._uris.append(_norm(uri))
        return True

    def remove(self, uri: str) -> bool:
        """True if `uri` was a folder."""
        if _norm(uri) not in self._uris:
            return False
        self._uris.remove(_norm(uri))
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._uris))

    def __len__(self) -> int:
        return len(self._uris)

    def folder_for(self, uri: str) -> str | None:
        """The folder holding `uri` (the longest prefix), None if none does."""
        best = None
        for f in self._uris:
            if (uri == f or uri.startswith(f + "/")) and (best is None or len(f) > len(best)):
                best = f
        return best


class WorkspaceIndexes:
    """One `NgramIndex` per workspace folder and a default one, once a tokenizer is known."""

    def __init__(
        self,
        folders: Folders | None = None,
        tokenize: TokenizeFn | Any | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        self.folders = folders if folders is not None else Folders()
        self.max_tokens = max_tokens
        self.tokenize: TokenizeFn | None = None
        self.default: NgramIndex | None = None
        self._by_folder: dict[str, NgramIndex] = {}
        self._encode: Callable[[str], list[int]] | None = None
        self._fim_suffix: int | None = None
        self._fim_middle: int | None = None
        if tokenize is not None:
            self._start(tokenize)

    # --- lifecycle ------------------------------------------------------------------------

    def attach(
        self,
        tokenizer: Any,
        encode: Callable[[str], list[int]],
        documents: Iterable[tuple[str, str]],
        fim_suffix_id: int | None = None,
        fim_middle_id: int | None = None,
    ) -> None:
        """Index `documents` ((uri, text) pairs, the most recently used first) with a new
        model's tokenizer, from scratch. Each index takes the most recent documents that fit
        its cap and leaves the older ones out (one of them is indexed when it is next
        edited). Opened in the order they came, every document past the cap was tokenized
        and posted only to evict an earlier one: eight 300k-character documents kept the
        index thread busy half a minute at every reload, and edits queued behind it."""
        t0 = time.perf_counter()
        self._start(tokenizer)
        self._encode = encode
        self._fim_suffix, self._fim_middle = fim_suffix_id, fim_middle_id
        docs = list(documents)
        n = skipped = 0
        chars = tokens = 0  # so far: the tokens a text of so many characters will take
        for i, (uri, text) in enumerate(docs):
            ix = self.index_for(uri)
            guess = len(text) * (tokens / chars if chars else 0.25)
            if ix.ntokens and ix.ntokens + guess > ix.max_tokens:
                skipped += 1
                continue
            before = ix.ntokens
            ix.open(uri, text, stamp=len(docs) - i)  # older documents, older stamps (eviction order)
            if ix.ntokens > before:  # indexed, not refused as too large
                chars, tokens = chars + len(text), tokens + ix.ntokens - before
            n += 1
        log.info(
            "indexed %d open documents in %.0f ms%s",
            n,
            (time.perf_counter() - t0) * 1e3,
            f" ({skipped} older ones left out: the index cap)" if skipped else "",
        )

    def _start(self, tokenize: TokenizeFn | Any) -> None:
        self.tokenize = tokenize if is_tokenize_fn(tokenize) else make_tokenize(tokenize)
        for ix in self.indexes():  # the previous tokenizer's
            ix.discard()
        self.default = NgramIndex(self.tokenize, self.max_tokens)
        self._by_folder = {}
        self.folders_changed()

    @property
    def ready(self) -> bool:
        return self.default is not None

    def set_max_tokens(self, max_tokens: int) -> None:
        """A new size cap for every folder's index (evicting on the next edit)."""
        self.max_tokens = max_tokens
        for ix in self.indexes():
            ix.max_tokens = max_tokens

    def folders_changed(self) -> None:
        """Follow the folder list; documents move to the index of their new folder."""
        if self.default is None:
            return
        old = [self.default, *self._by_folder.values()]
        self._by_folder = {
            f: self._by_folder.get(f) or NgramIndex(self.tokenize, self.max_tokens) for f in self.folders
        }
        for ix in old:
            for uri in ix.uris():
                target = self.index_for(uri)
                if target is not ix and ix.tokenize is not None and ix.source(uri) == "document":
                    target.open(uri, ix.text(uri))
                    ix.close(uri)
        kept = {id(ix) for ix in self.indexes()}
        for ix in old:
            if id(ix) not in kept:  # a folder gone: what it still holds (its history) goes too
                ix.discard()

    # --- routing --------------------------------------------------------------------------

    def index_for(self, uri: str) -> NgramIndex:
        if self.default is None:
            raise RuntimeError("no tokenizer attached yet")
        f = self.folders.folder_for(uri)
        return self._by_folder.get(f, self.default) if f is not None else self.default

    def indexes(self) -> list[NgramIndex]:
        return [self.default, *self._by_folder.values()] if self.default is not None else []

    # --- documents ------------------------------------------------------------------------

    def open(self, uri: str, text: str) -> None:
        if self.default is not None:
            self.index_for(uri).open(uri, text)

    def edit(self, uri: str, start: int, end: int, new_text: str, full_text: str) -> None:
        """Apply an edit; `full_text` (the document after it) re-indexes a document that was
        evicted or whose copy here disagrees."""
        if self.default is None:
            return
        ix = self.index_for(uri)
        try:
            ok = ix.edit(uri, start, end, new_text)
        except ValueError as e:  # the index's copy disagrees with the caller's: start over
            log.warning("index edit failed (%s); re-indexing %s", e, uri)
            ok = False
        if not ok:
            ix.open(uri, full_text)

    def close(self, uri: str) -> None:
        if self.default is not None:
            self.index_for(uri).close(uri)

    def refused(self) -> list[str]:
        """Documents too large for their folder's index (`NgramIndex.refused`)."""
        return [u for ix in self.indexes() for u in ix.refused()]

    def ntokens(self) -> int:
        """Tokens held by all folders' indexes (each is capped at indexMaxTokens)."""
        return sum(ix.ntokens for ix in self.indexes())

    def add_history(self, uri: str, text: str | Sequence[int]) -> None:
        """An accepted or generated completion in document `uri`, remembered by its index."""
        if self.default is None:
            return
        if isinstance(text, str):
            if not text.strip() or self._encode is None:
                return
            text = self._encode(text[:MAX_HISTORY_CHARS])
        self.index_for(uri).add_history(list(text)[:MAX_HISTORY_CHARS])

    # --- drafting -------------------------------------------------------------------------

    def drafter_for(self, uri: str, cursor: int | None = None, **options: Any) -> Drafter:
        """A drafter for a request in `uri` at character offset `cursor`."""
        if self.default is None:
            return PromptLookupDrafter()
        options.setdefault("fim_suffix_id", self._fim_suffix)
        options.setdefault("fim_middle_id", self._fim_middle)
        d = WorkspaceDrafter(self.index_for(uri), **options)
        d.set_request(uri, cursor)
        return d
