"""A tiny model trained in-process until it reproduces its corpus, for tests that must say
what a suggestion should be.

The random model of `tiny.py` writes deterministic nonsense: good for lossless-decoding
tests, useless for asserting what a suggestion says. This one is the same architecture
(Qwen2, byte-level BPE, the FIM special tokens) trained on a small built-in Python file,
`CORPUS`, until greedy decoding reproduces it from the prompts the server builds: for every
line start (and every cursor after a line's indentation) the FIM prompt
`<|fim_prefix|>text before<|fim_suffix|><|fim_middle|>`, made by the real
`context.build_prompt`, continues with the next `WINDOW` tokens of the corpus (EOS after
its end), each by a logit margin. The check runs at the end and raises if it does not hold.
Only an empty suffix is trained: tests put the cursor at the end of the document. (A module
of its own: tiny.py stays the small random builder that most tests use.)

Training is cheap because every example shares its text with the corpus: the corpus is
run once (plain language-model loss), and each example runs only its own last tokens
(where its tokenization leaves the corpus', then suffix, `<|fim_middle|>` and the target)
against the corpus' keys and values up to its cut, in one batch with a 4D attention mask.
Everything is deterministic: fixed seeds, one thread, deterministic algorithms, full-batch
steps in a fixed order. `trained()` caches the result under the speclsp cache directory,
in a directory named by the hash of the recipe (corpus, config, hyper-parameters, this
code, library versions), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..local.registry import READY_MARKER, cache_dir, is_ready
from ..local.tiny import SPECIAL_TOKENS, train_tokenizer

log = logging.getLogger(__name__)

# Tests complete: `area`'s body (one line), `describe`'s (a long line that streams),
# `scale`'s (three lines).
CORPUS = '''"""Shapes and a small inventory."""

import math


class Rectangle:
    def __init__(self, width, height):
        self.width = width
        self.height = height

    def area(self):
        return self.width * self.height

    def perimeter(self):
        return 2 * (self.width + self.height)

    def describe(self):
        return f"Rectangle of width {self.width} and height {self.height}, area {self.area()}, perimeter {self.perimeter()}"

    def scale(self, factor):
        width = self.width * factor
        height = self.height * factor
        return Rectangle(width, height)


def circle_area(radius):
    return math.pi * radius ** 2


class Inventory:
    def __init__(self):
        self.items = {}

    def add(self, name, count=1):
        self.items[name] = self.items.get(name, 0) + count
        return self.items[name]

    def remove(self, name, count=1):
        if self.items.get(name, 0) < count:
            raise ValueError(f"not enough {name}")
        self.items[name] -= count

    def total(self):
        return sum(self.items.values())
'''

RECIPE: dict[str, Any] = {
    "vocab": 512,
    "hidden": 128,
    "layers": 2,
    "heads": 4,
    "kv_heads": 2,
    "intermediate": 256,
    "seed": 0,
    "lr": 6e-3,
    "warmup": 20,
    "max_steps": 600,
    "window": 48,
    "margin": 2.0,
}
WINDOW: int = RECIPE["window"]  # tokens of corpus each example must continue with
PATH = "corpus.py"  # the document's name in training prompts (not part of a FIM prompt)
# Qwen2's pre-tokenizer split. transformers loads a directory whose config says "qwen2"
# with Qwen2Tokenizer, which imposes this split and NFC: merges are learnt with the same.
QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def cursors(corpus: str = CORPUS) -> list[int]:
    """Offsets the model is trained and checked at: each line start and, on indented
    lines, the end of the indentation (where an editor puts the cursor after Enter)."""
    out, start = [], 0
    for line in corpus.split("\n"):
        out.append(start)
        indent = len(line) - len(line.lstrip(" "))
        if 0 < indent < len(line):
            out.append(start + indent)
        start += len(line) + 1
    return [c for c in out if c < len(corpus)]


def recipe_hash(corpus: str = CORPUS, recipe: dict | None = None) -> str:
    """What the trained weights depend on: a new corpus, recipe, code or library rebuilds."""
    import tokenizers
    import torch
    import transformers

    here = Path(__file__).parent.parent  # the speclsp package
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "corpus": corpus,
                "recipe": recipe or RECIPE,
                "versions": [torch.__version__, transformers.__version__, tokenizers.__version__],
            },
            sort_keys=True,
        ).encode()
    )
    for name in ("tools/tiny_trained.py", "local/tiny.py"):
        h.update((here / name).read_bytes())
    h.update((here / "completion" / "context.py").read_bytes())  # the prompt builder
    return h.hexdigest()[:16]


def trained(root: str | Path | None = None, corpus: str = CORPUS) -> Path:
    """The trained model's directory under `root` (default: cache_dir()/models), built on
    first use; a finished directory (with READY_MARKER) is reused."""
    root = Path(root) if root is not None else cache_dir() / "models"
    out = root / f"tiny-trained-{recipe_hash(corpus)}"
    if is_ready(out):
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=root))
    try:
        build_trained(tmp, corpus)
        if out.exists() and not is_ready(out):
            shutil.rmtree(out, ignore_errors=True)  # left unfinished (never a finished one: it may be in use)
        try:
            os.replace(tmp, out)
        except OSError:
            if not is_ready(out):  # otherwise another process finished first: use that one
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _prompts(tok, corpus: str, fim):
    """(cursor, prompt ids, target ids) per cursor: the server's FIM prompt for the corpus
    cut there (empty suffix) and the next WINDOW tokens, the corpus' end followed by EOS."""
    from ..completion.context import build_prompt

    def encode(s: str) -> list[int]:
        return tok.encode(s, add_special_tokens=False)

    for c in cursors(corpus):
        prompt = list(build_prompt(encode, fim, PATH, corpus[:c], "").ids)
        yield c, prompt, (encode(corpus[c:]) + [tok.eos_token_id])[:WINDOW]


def _examples(tok, corpus: str, fim):
    """(trunk ids, [(cut in trunk, segment ids, labels)]): the shared corpus run and, per
    cursor, the tokens of its prompt + target beyond their common prefix with the trunk."""
    trunk = [fim.prefix] + tok.encode(corpus, add_special_tokens=False) + [tok.eos_token_id]
    out = []
    for _, prompt, target in _prompts(tok, corpus, fim):
        full = prompt + target
        lcp = 0
        while lcp < len(prompt) - 1 and full[lcp] == trunk[lcp]:
            lcp += 1
        seg = full[lcp:-1]
        labels = [t if i + lcp + 1 >= len(prompt) else -100 for i, t in enumerate(full[lcp + 1 :])]
        out.append((lcp, seg, labels))
    return trunk, out


def _batch(trunk, examples, pad: int):
    import torch

    n, length = len(trunk), max(len(s) for _, s, _ in examples)
    ids = torch.full((len(examples), length), pad)
    labels = torch.full((len(examples), length), -100)
    pos = torch.zeros((len(examples), length), dtype=torch.long)
    mask = torch.zeros((len(examples), 1, length, n + length), dtype=torch.bool)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    for b, (lcp, seg, lab) in enumerate(examples):
        ids[b, : len(seg)] = torch.tensor(seg)
        labels[b, : len(lab)] = torch.tensor(lab)
        pos[b] = torch.arange(lcp, lcp + length)
        mask[b, 0, :, :lcp] = True  # the corpus before the cut
        mask[b, 0, :, n:] = causal  # the segment itself
    return ids, labels, pos, mask


def _forward(model, trunk_ids, batch):
    """Logits of the trunk (1, n, V) and of the segments (B, L, V), segments attending to
    the trunk's keys and values (gradients flow through both)."""
    from transformers import DynamicCache

    ids, _, pos, mask = batch
    cache = DynamicCache(config=model.config)
    trunk = model(input_ids=trunk_ids, cache=cache, use_cache=True)
    cache.batch_repeat_interleave(ids.shape[0])
    seg = model(input_ids=ids, position_ids=pos, attention_mask=mask, cache=cache, use_cache=True)
    return trunk.logits, seg.logits


def _misses(logits, labels, margin: float) -> int:
    """Target positions where greedy decoding would not pick the label by `margin`."""
    keep = labels >= 0
    lg = logits[keep]
    lab = labels[keep]
    right = lg.gather(1, lab[:, None])[:, 0]
    other = lg.scatter(1, lab[:, None], float("-inf")).max(1).values
    return int((right - other < margin).sum())


def build_trained(
    out_dir: str | Path, corpus: str = CORPUS, recipe: dict | None = None, *, require: bool = True
) -> Path:
    """Train the model on `corpus` and write it, with its tokenizer, to `out_dir`.

    Raises RuntimeError if greedy decoding does not reproduce the corpus at every cursor
    of `cursors()` within the step cap (with `require=False`: writes it anyway; tests of
    determinism use a few steps).
    """
    import torch
    from tokenizers import Regex, normalizers, pre_tokenizers
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from ..completion.context import FimTokens

    r = {**RECIPE, **(recipe or {})}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    split = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trained_tok = train_tokenizer([corpus], r["vocab"], split, normalizers.NFC())
    trained_tok.save_pretrained(str(out))
    sid = {t: trained_tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2Config(
        vocab_size=len(trained_tok),
        hidden_size=r["hidden"],
        intermediate_size=r["intermediate"],
        num_hidden_layers=r["layers"],
        num_attention_heads=r["heads"],
        num_key_value_heads=r["kv_heads"],
        max_position_embeddings=4096,
        eos_token_id=sid["<|endoftext|>"],
        tie_word_embeddings=True,
    )
    config.save_pretrained(str(out))
    # Examples are encoded by the tokenizer as the server will load it, whatever class
    # transformers picks for it.
    tok = AutoTokenizer.from_pretrained(str(out))
    if tok.encode(corpus, add_special_tokens=False) != trained_tok.encode(corpus, add_special_tokens=False):
        log.warning("tiny-trained: the loaded tokenizer splits the corpus differently from the trained one")
    fim = FimTokens(
        sid["<|fim_prefix|>"], sid["<|fim_suffix|>"], sid["<|fim_middle|>"], sid["<|file_sep|>"], sid["<|repo_name|>"]
    )
    trunk, examples = _examples(tok, corpus, fim)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(r["seed"])
        model = Qwen2ForCausalLM(config)
        model.set_attn_implementation("sdpa")  # the 4D boolean mask of `_forward` needs it
        model.train()
        trunk_ids = torch.tensor([trunk])
        trunk_labels = torch.tensor([trunk[1:] + [-100]])
        batch = _batch(trunk, examples, sid["<|fim_pad|>"])
        opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / r["warmup"]))
        ce = torch.nn.functional.cross_entropy
        step, misses = 0, -1
        while True:
            t_logits, s_logits = _forward(model, trunk_ids, batch)
            with torch.no_grad():
                misses = _misses(s_logits, batch[1], r["margin"])
            if misses == 0 or step >= r["max_steps"]:
                break
            loss = ce(t_logits.flatten(0, 1), trunk_labels.flatten(), ignore_index=-100) + ce(
                s_logits.flatten(0, 1), batch[1].flatten(), ignore_index=-100
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                log.info("tiny-trained step %d loss %.4f misses %d", step, loss.item(), misses)
        model.eval()
        if misses and require:
            raise RuntimeError(f"tiny trained model: {misses} target tokens still wrong after {step} steps")
        bad = _check(model, tok, corpus, fim) if not misses else []
        if bad and require:
            raise RuntimeError(f"tiny trained model does not reproduce its corpus at offsets {bad[:5]}")
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    seconds = time.perf_counter() - t0
    model.save_pretrained(str(out), safe_serialization=True)
    (out / READY_MARKER).write_text(
        json.dumps(
            {
                "name": "tiny-trained",
                "recipe": r,
                "steps": step,
                "misses": misses,
                "train_seconds": round(seconds, 2),
                "cursors": len(examples),
            }
        )
    )
    log.info("tiny-trained: %d steps, %.1f s", step, seconds)
    return out


def _check(model, tok, corpus: str, fim) -> list[int]:
    """Cursors where the whole prompt, run on its own (no shared trunk), does not greedily
    continue with the corpus' next WINDOW tokens."""
    import torch

    bad = []
    with torch.no_grad():
        for c, prompt, target in _prompts(tok, corpus, fim):
            logits = model(input_ids=torch.tensor([prompt + target[:-1]])).logits[0, len(prompt) - 1 :]
            if logits.argmax(-1).tolist() != target:
                bad.append(c)
    return bad


if __name__ == "__main__":  # python -m speclsp.tools.tiny_trained DIR: build and time
    logging.basicConfig(level=logging.INFO)
    t = time.perf_counter()
    print(build_trained(sys.argv[1]), f"{time.perf_counter() - t:.1f} s")
