"""A tiny randomly initialised model, built in-process, for tests that need only *a* model.

It is a real Qwen2 architecture (same code path, KV cache and FIM special tokens as the
default model) with a byte-level BPE tokenizer trained in well under a second on a small
built-in Python corpus. Weights come from a fixed seed, so every build is identical.
`speclsp models tiny DIR` writes one to disk; the server and CLI load it like any local
model directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from .registry import READY_MARKER

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|file_sep|>",
    "<|repo_name|>",
]


def _corpus() -> list[str]:
    words = ["self", "value", "items", "result", "index", "name", "data", "count", "path", "key"]
    lines = []
    for i, w in enumerate(words):
        v = words[(i + 3) % len(words)]
        lines += [
            f"def get_{w}(self, {v}):",
            f'    """Return the {w} for {v}."""',
            f"    if {v} is None:",
            f"        return self.{w}",
            f"    for {w} in {v}:",
            f"        {w} = {w} + {i}",
            f"    return {w} * {i + 1}  # {w}",
            f"class {w.title()}Store:",
            f"    def __init__(self, {w}: int = {i}) -> None:",
            f"        self.{w} = {w}",
            f"import os, sys  # {w}",
            f"print(f\"{{{w}}}\", [{i}, {i + 1}], {{'{v}': {i}}})",
        ]
    return lines


def train_tokenizer(
    texts: list[str],
    vocab: int,
    pre_tokenizer=None,
    normalizer=None,
    *,
    special_tokens: list[str] | None = None,
    eos: str | None = "<|endoftext|>",
    pad: str | None = "<|fim_pad|>",
):
    """A byte-level BPE tokenizer (GPT-2 style, as Qwen's) with `special_tokens` (the FIM
    tokens by default), trained on `texts`; deterministic for the same texts.
    `pre_tokenizer` and `normalizer` replace GPT-2's splitting (tokenizers objects)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizer or pre_tokenizers.ByteLevel(add_prefix_space=False)
    if normalizer is not None:
        tk.normalizer = normalizer
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIAL_TOKENS if special_tokens is None else special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=eos, pad_token=pad)


def build_tokenizer(special_tokens: list[str], vocab: int = 512, eos: str | None = None, pad: str | None = None):
    """A tokenizer trained on the built-in corpus with `special_tokens`, as a transformers
    fast tokenizer. Tests build one per FIM family with that family's tokens."""
    return train_tokenizer(_corpus() * 3, vocab, special_tokens=special_tokens, eos=eos, pad=pad)


def build(
    out_dir: str | Path, hidden: int = 64, layers: int = 2, heads: int = 4, vocab: int = 512, seed: int = 0
) -> Path:
    """Write a tiny random Qwen2 model and its tokenizer to `out_dir`; returns the path."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast = train_tokenizer(_corpus() * 3, vocab)
    fast.save_pretrained(str(out))
    tk = fast.backend_tokenizer

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=tk.get_vocab_size(),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=4096,
        eos_token_id=tk.token_to_id("<|endoftext|>"),
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        # Larger logits make near-ties (and so flaky comparisons) rarer.
        model.lm_head.weight.mul_(8.0)
        # Zero rows for the special tokens (embedding and head are tied): their logit is
        # then 0 while the best ordinary token's is positive, so the model never ends a
        # completion at once and tests see real text.
        for t in SPECIAL_TOKENS:
            model.lm_head.weight[tk.token_to_id(t)] = 0.0
    model.save_pretrained(str(out), safe_serialization=True)
    (out / READY_MARKER).write_text(json.dumps({"name": "tiny", "seed": seed}))
    return out
