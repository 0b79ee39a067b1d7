"""Which fill-in-the-middle template a tokenizer's model was trained on.

A model family is recognised by the special tokens its tokenizer has (looked up by text,
`Backend.special_ids`); `detect_fim` returns that tokenizer's `context.FimTokens`, or None
when it has no complete set of markers (the prompt is then the plain prefix). Where each
template comes from:

- Qwen2.5-Coder: `<|fim_prefix|>`, `<|fim_suffix|>`, `<|fim_middle|>`, repo context
  `<|repo_name|>name\\n<|file_sep|>path\\ncode` (the Qwen2.5-Coder README and technical report).
- StarCoder/StarCoder2: `<fim_prefix>`, `<fim_suffix>`, `<fim_middle>`; StarCoder2 adds
  `<repo_name>`/`<file_sep>` in the same repo layout (bigcode model cards, StarCoder2 paper).
- CodeLlama: `▁<PRE>`, `▁<SUF>`, `▁<MID>`, `▁<EOT>` are the pieces Meta's tokenizer looks up
  (facebookresearch/codellama `llama/tokenizer.py`; transformers' CodeLlamaTokenizer), some
  conversions spell them without the `▁`. The prompt is `<s><PRE> {prefix} <SUF>{suffix} <MID>`
  (`generation.py::infilling_prompt_tokens`: BOS, the prefix encoded with the tokenizer's
  leading space, the suffix without it).
- DeepSeek-Coder: `<｜fim▁begin｜>prefix<｜fim▁hole｜>suffix<｜fim▁end｜>` (full-width bars,
  U+2581), after the tokenizer's BOS `<｜begin▁of▁sentence｜>` (the DeepSeek-Coder README).
- CodeGemma: Qwen's three marker spellings without its repo tokens; files are separated by
  `<|file_separator|>` (ai.google.dev/gemma/docs/codegemma/prompt-structure), after `<bos>`.

Qwen and CodeGemma share the markers: a tokenizer with `<|file_separator|>` is CodeGemma.
The stop tokens of every family are in `local.model.END_TOKENS`; every token string named
here is in `local.model.FIM_TOKENS`, the ones the local backend looks up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .context import FimTokens


@dataclass(frozen=True)
class FimFamily:
    """A family's token spellings; each field lists alternatives, the first one present wins."""

    name: str
    prefix: tuple[str, ...]
    suffix: tuple[str, ...]
    middle: tuple[str, ...]
    file_sep: tuple[str, ...] = ()
    repo_name: tuple[str, ...] = ()
    bos: tuple[str, ...] = ()
    end: tuple[str, ...] = ()  # where the model ends a middle, besides its EOS (model.END_TOKENS)
    requires: tuple[str, ...] = ()  # tokens that must also be present (to tell families apart)
    spaced: bool = False  # CodeLlama's spacing (FimTokens.spaced)


QWEN = FimFamily(
    "qwen",
    ("<|fim_prefix|>",),
    ("<|fim_suffix|>",),
    ("<|fim_middle|>",),
    file_sep=("<|file_sep|>",),
    repo_name=("<|repo_name|>",),
    end=("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>"),
)
STARCODER = FimFamily(
    "starcoder",
    ("<fim_prefix>",),
    ("<fim_suffix>",),
    ("<fim_middle>",),
    file_sep=("<file_sep>",),
    repo_name=("<repo_name>",),
    end=("<|endoftext|>", "<fim_pad>", "<file_sep>"),
)
CODELLAMA = FimFamily(
    "codellama",
    ("▁<PRE>", "<PRE>"),
    ("▁<SUF>", "<SUF>"),
    ("▁<MID>", "<MID>"),
    bos=("<s>",),
    end=("▁<EOT>", "<EOT>"),
    spaced=True,
)  # and its EOS </s>
DEEPSEEK = FimFamily(
    "deepseek",
    ("<｜fim▁begin｜>",),
    ("<｜fim▁hole｜>",),
    ("<｜fim▁end｜>",),
    bos=("<｜begin▁of▁sentence｜>",),
    end=("<｜end▁of▁sentence｜>", "<|EOT|>"),
)
CODEGEMMA = FimFamily(
    "codegemma",
    ("<|fim_prefix|>",),
    ("<|fim_suffix|>",),
    ("<|fim_middle|>",),
    file_sep=("<|file_separator|>",),
    bos=("<bos>",),
    end=("<|file_separator|>", "<eos>", "<end_of_turn>"),
    requires=("<|file_separator|>",),
)

# Tried in this order: CodeGemma before Qwen (same markers, told apart by `requires`).
FAMILIES: tuple[FimFamily, ...] = (CODEGEMMA, QWEN, STARCODER, CODELLAMA, DEEPSEEK)


def token_strings() -> tuple[str, ...]:
    """Every token string some family needs, in a stable order."""
    seen: dict[str, None] = {}
    for f in FAMILIES:
        for group in (f.prefix, f.suffix, f.middle, f.file_sep, f.repo_name, f.bos, f.end, f.requires):
            seen.update(dict.fromkeys(group))
    return tuple(seen)


def stop_token_strings() -> tuple[str, ...]:
    """Tokens that end a middle in any family: its end tokens and its FIM, file and repo
    markers (a model that writes one has left the middle). For backends that stop on a
    list (a remote server); the local engine has its own (`local.model.END_TOKENS`)."""
    seen: dict[str, None] = {}
    for f in FAMILIES:
        for group in (f.end, f.prefix, f.suffix, f.middle, f.file_sep, f.repo_name):
            seen.update(dict.fromkeys(group))
    return tuple(seen)


def _first(special: Mapping[str, int | None], names: tuple[str, ...]) -> tuple[str, int] | None:
    for name in names:
        if special.get(name) is not None:
            return name, special[name]  # type: ignore[return-value]
    return None


def detect_fim(special: Mapping[str, int | None]) -> FimTokens | None:
    """The FIM tokens of the first family whose markers `special` (token text -> id or None,
    e.g. `Backend.special_ids` or a tokenizer's vocabulary) all has, else None."""
    for fam in FAMILIES:
        if any(special.get(t) is None for t in fam.requires):
            continue
        pre, suf, mid = _first(special, fam.prefix), _first(special, fam.suffix), _first(special, fam.middle)
        if pre is None or suf is None or mid is None:
            continue
        sep, repo, bos = _first(special, fam.file_sep), _first(special, fam.repo_name), _first(special, fam.bos)
        return FimTokens(
            pre[1],
            suf[1],
            mid[1],
            file_sep=sep[1] if sep else None,
            repo_name=repo[1] if repo else None,
            family=fam.name,
            bos=bos[1] if bos else None,
            spaced=fam.spaced,
            space_before_suffix=fam.spaced and not suf[0].startswith("▁"),
            space_before_middle=fam.spaced and not mid[0].startswith("▁"),
        )
    return None
