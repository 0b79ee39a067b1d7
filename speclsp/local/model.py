"""The model: the one module that loads and runs a transformers model (quant.py, treeattn.py
and precision.py hold the tensor code it uses).

Loads a causal LM (registered name, local directory, GGUF file, or Hugging Face id),
picks device (CUDA, then Apple MPS, then CPU) and a precision that is fast there, warms it
up, and exposes the three operations the engine needs on a KV cache: `forward` over a few
new tokens, `crop` back to a prefix, and `greedy` next-token ids. `step_costs` says what a
verify pass per draft length costs here (`calibration.py` measures it).

On CUDA and MPS the precision follows a rule (bf16 where supported, else fp16). On a CPU
it is measured (`precision.py`): bf16 is faster than float32 where the CPU has bf16
hardware (AMX, AVX512-BF16) and many times slower where it has none (AVX2: every drafted
token costs about a whole step), and int8 weights (`quant.py`) read a quarter of float32's bytes.

This file is one concern (a loaded model: loading it and its forward passes) at ~440 lines.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from ..backend import stop_requested
from ..drafting.tokens import common_prefix_len, shared_tokenizer
from . import calibration, precision, quant
from . import registry as models
from .treeattn import gather_path, tree_inputs

log = logging.getLogger(__name__)

PREFILL_CHUNK = 256  # tokens per prefill forward; cancellation is checked between chunks

# Tokens that end a completion for the model families we know (completion/fim.py names
# each family's). Looked up by text, so a tokenizer without them simply contributes none.
END_TOKENS = (
    # Qwen2.5-Coder (its FIM markers too: a model that writes one has left the middle)
    "<|endoftext|>",
    "<|im_end|>",
    "<|fim_pad|>",
    "<|file_sep|>",
    "<|repo_name|>",
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    # CodeGemma (and Gemma)
    "<eos>",
    "<end_of_turn>",
    "<|file_separator|>",
    # StarCoder/StarCoder2 (<|endoftext|> above)
    "<fim_pad>",
    "<file_sep>",
    "<fim_prefix>",
    "<fim_suffix>",
    "<fim_middle>",
    # CodeLlama: the end of the middle, as Meta's tokenizer spells it and as conversions do
    "▁<EOT>",
    "<EOT>",
    # DeepSeek-Coder
    "<｜end▁of▁sentence｜>",
    "<|EOT|>",
)

# The special tokens the local backend reports (`special_ids`) so the completion layer can
# detect the FIM family: every token string `completion.fim.token_strings()` names (a test
# checks that; this layer does not import the completion layer).
FIM_TOKENS = (
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    "<|file_sep|>",
    "<|repo_name|>",  # Qwen
    "<|file_separator|>",
    "<bos>",  # CodeGemma (with Qwen's markers)
    "<fim_prefix>",
    "<fim_suffix>",
    "<fim_middle>",
    "<file_sep>",
    "<repo_name>",  # StarCoder(2)
    "▁<PRE>",
    "<PRE>",
    "▁<SUF>",
    "<SUF>",
    "▁<MID>",
    "<MID>",
    "<s>",  # CodeLlama
    "<｜fim▁begin｜>",
    "<｜fim▁hole｜>",
    "<｜fim▁end｜>",
    "<｜begin▁of▁sentence｜>",  # DeepSeek-Coder
) + END_TOKENS


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA, then Apple MPS, then CPU, unless `requested` (e.g. "cpu", "cuda:1") says otherwise."""
    if requested and requested != "auto":
        dev = torch.device(requested)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise models.ModelError(f"device {requested} asked for, but CUDA is not available")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise models.ModelError(f"device {requested} asked for, but Apple MPS is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


DTYPES = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
    "int8": torch.float32,
}  # int8: int8 weights, float32 everything else (quant.py)
# int8 is quantized from bf16 weights (half the bytes to load; the registry's models are
# bf16 on disk anyway, and bf16 rounding is far below an int8 step).
LOAD_DTYPES = {"int8": torch.bfloat16}
ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}


def parse_precision(requested: str | None) -> str | None:
    """A precision's canonical name; None for "auto" (or nothing). Raises ModelError."""
    if not requested or requested.strip().lower() == "auto":
        return None
    name = ALIASES.get(requested.strip().lower(), requested.strip().lower())
    if name not in DTYPES:
        raise models.ModelError(f"unknown dtype {requested!r}: use auto, {', '.join(DTYPES)}")
    return name


def rule_precision(device: torch.device) -> str:
    """bf16 on CUDA where supported (else fp16), fp16 on MPS, bf16 on CPU."""
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.type == "mps":
        return "float16"
    return "bfloat16"


@dataclass
class KVState:
    """A KV cache and the token ids it holds, position by position."""

    cache: DynamicCache | None = None
    ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


class LoadedModel:
    """A causal LM on a device, with its tokenizer and what ends a completion."""

    def __init__(
        self,
        model,
        tokenizer,
        device: torch.device,
        dtype: torch.dtype,
        name: str,
        precision: str | None = None,
        reason: str = "",
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype  # of activations and attention
        self.name = name
        # What the weights are: the dtype's name, or "int8" (quant.py); and why it was chosen.
        self.precision = precision or str(dtype).removeprefix("torch.")
        self.reason = reason
        self.probe_costs: dict[int, float] = {}  # k -> seconds, from choose_cpu_precision
        self._calibration: calibration.Calibration | None = None
        vocab = tokenizer.get_vocab()
        self.end_ids: frozenset[int] = frozenset(
            {vocab[t] for t in END_TOKENS if t in vocab}
            | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
        )
        self.fim: dict[str, int | None] = {t: vocab.get(t) for t in dict.fromkeys(FIM_TOKENS)}
        self.vocab_size = model.config.vocab_size
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    # --- text <-> ids -----------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # --- tensors ---------------------------------------------------------------------

    @overload
    def forward(
        self, kv: KVState, new_ids: Sequence[int], last_only: bool = False, logits: Literal[True] = True
    ) -> torch.Tensor: ...

    @overload
    def forward(
        self, kv: KVState, new_ids: Sequence[int], last_only: bool = False, *, logits: Literal[False]
    ) -> None: ...

    @torch.inference_mode()
    def forward(
        self, kv: KVState, new_ids: Sequence[int], last_only: bool = False, logits: bool = True
    ) -> torch.Tensor | None:
        """Append `new_ids` to the cache; returns their logits: [T, vocab] fp32 ([1, vocab]
        if `last_only`; None without `logits`)."""
        if kv.cache is None:
            kv.cache = DynamicCache(config=self.model.config)
        x = torch.tensor([list(new_ids)], dtype=torch.long, device=self.device)  # [1, T]
        # The lm_head only where logits are needed: the last position (`last_only`) or none
        # (prefill chunks: the 150k-row head is the largest single matmul even for one
        # position, and most of the memory of a long prefill for all of them).
        keep: int | torch.Tensor = 1 if last_only else 0  # 0: every position
        if not logits:
            keep = torch.empty(0, dtype=torch.long, device=self.device)  # no position
        # The cache is updated in place. transformers 5.24 renamed the argument to `cache`
        # (`past_key_values` warns, and goes in 5.40); older 5.x releases know only the old name.
        out = self.model(input_ids=x, use_cache=True, logits_to_keep=keep, **{self._cache_arg: kv.cache})
        kv.ids.extend(new_ids)
        return out.logits[0].float() if logits else None  # [T, V]

    @property
    def tree_attention(self) -> bool:
        """Whether `forward_tree` works here: attention implementations that take a custom
        4D mask as given (sdpa, eager). Others (flash attention, flex) verify chains only."""
        return getattr(self.model.config, "_attn_implementation", None) in ("sdpa", "eager")

    @torch.inference_mode()
    def forward_tree(self, kv: KVState, pending: int, tokens: Sequence[int], parents: Sequence[int]) -> torch.Tensor:
        """One forward over the pending token and a token tree under it: [1 + n, vocab] fp32.

        Row 0 is the model's distribution after `pending`, row i + 1 after node i given its
        ancestors: every node attends to the cached prefix, to the pending token and to its
        own ancestors only, at the position of its depth. The cache then holds all 1 + n
        entries; `keep_path` keeps the accepted ones.
        """
        if kv.cache is None:
            kv.cache = DynamicCache(config=self.model.config)
        pos, mask = tree_inputs(len(kv.ids), parents, self.dtype, self.device)  # [1, 1 + n], [1, 1, 1 + n, KV]
        x = torch.tensor([[pending, *tokens]], dtype=torch.long, device=self.device)  # [1, 1 + n]
        out = self.model(
            input_ids=x, position_ids=pos, attention_mask=mask, use_cache=True, **{self._cache_arg: kv.cache}
        )
        kv.ids.extend([pending, *tokens])
        return out.logits[0].float()  # [1 + n, V]

    @torch.inference_mode()
    def keep_path(self, kv: KVState, base: int, path: Sequence[int]) -> None:
        """After `forward_tree` at cache length `base`: keep the pending token and the tree
        nodes `path` (root to leaf), moved to follow it; drop the other branches. Their
        keys and values were computed at the positions they now occupy."""
        rows = [base] + [base + 1 + i for i in path]
        if rows != list(range(base, base + len(rows))):
            gather_path(kv.cache, base, rows, self.device)
            for j, r in enumerate(rows):
                kv.ids[base + j] = kv.ids[r]
        self.crop(kv, base + len(rows))

    def prefill(
        self, kv: KVState, ids: Sequence[int], cancel: Any = None, deadline: float | None = None
    ) -> tuple[int, int] | None:
        """Bring `kv` to hold exactly `ids`: keep its longest common prefix with them and feed
        the rest in chunks of PREFILL_CHUNK (logits unused). Returns (reused tokens,
        forwards), or None if `cancel` (a CancelToken) was set or the `deadline`
        (time.monotonic()) passed between chunks: what was fed stays in `kv`, so the next
        request with this prompt goes on from there."""
        keep = common_prefix_len(kv.ids, ids)
        self.crop(kv, keep)
        forwards, pos = 0, keep
        while pos < len(ids):
            if stop_requested(cancel, deadline):
                return None
            end = min(pos + PREFILL_CHUNK, len(ids))
            self.forward(kv, ids[pos:end], logits=False)
            forwards += 1
            pos = end
        return keep, forwards

    def greedy(self, logits: torch.Tensor) -> list[int]:
        """Argmax per position, restricted to the real vocabulary (padding rows excluded)."""
        return logits[:, : self.vocab_size].argmax(dim=-1).tolist()

    def top_k(self, logits: torch.Tensor, k: int) -> list[list[tuple[int, float]]]:
        """Per row, the k likeliest ids and their softmax probabilities (token recycling)."""
        p, ids = torch.softmax(logits[:, : self.vocab_size], dim=-1).topk(k, dim=-1)  # [T, k], [T, k]
        return [list(zip(i, q)) for i, q in zip(ids.tolist(), p.tolist())]

    def greedy_confidence(self, logits: torch.Tensor, limit: int | None = None) -> tuple[list[int], list[float]]:
        """Argmax per position and its softmax probability (the model's confidence in it).

        `limit` restricts the choice to ids below it (a draft model must not propose an id
        the target's embedding does not have).
        """
        v = logits[:, : min(limit or self.vocab_size, self.vocab_size)]  # [T, V']
        p, ids = torch.softmax(v, dim=-1).max(dim=-1)  # [T], [T]
        return ids.tolist(), p.tolist()

    @staticmethod
    def crop(kv: KVState, n: int) -> None:
        """Keep only the first n positions of the cache."""
        if n >= len(kv.ids):
            return
        if n <= 0 or kv.cache is None:
            kv.cache, kv.ids = None, []
            return
        kv.cache.crop(n - len(kv.ids))  # transformers 5 takes minus the tokens to drop
        del kv.ids[n:]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def warm_up(self) -> float:
        """One prefill and a few verify passes so the first real request is not the slow one."""
        t0 = time.perf_counter()
        kv = KVState()
        ids = self.encode("def warm_up(x):\n    return x + 1\n" * 4)[:64] or [0]
        self.forward(kv, ids)
        for k in (1, 8):
            self.forward(kv, ids[:k])
        self.sync()
        return time.perf_counter() - t0

    @property
    def calibration(self) -> calibration.Calibration:
        """The verify-pass costs here, measured in slices (calibration.py), cached by CPU."""
        if self._calibration is None:
            self._calibration = calibration.Calibration(
                self, models.cache_dir(), torch.get_num_threads(), known=self.probe_costs
            )
        return self._calibration

    def step_costs(self) -> dict[int, float]:
        """What is known now of the verify-pass costs: the whole grid once calibrated (and
        cached), else at least a probe of k = 0 and k = 15 (two passes)."""
        return self.calibration.table()


def load_learned(lm: LoadedModel) -> dict:
    """What the tree controller learnt about acceptance with this model in earlier runs
    (any unreadable content: nothing learnt, one warning)."""
    saved = calibration.read_json(lm.calibration.learned_path)
    if not isinstance(saved, dict):
        return {}
    out = {}
    for key, p in saved.items():  # "source|bucket" -> a probability; anything else is dropped
        if isinstance(key, str) and "|" in key and isinstance(p, (int, float)) and 0 <= p <= 1:
            out[key] = float(p)
    if len(out) < len(saved):
        log.warning("ignoring %d malformed entries of %s", len(saved) - len(out), lm.calibration.learned_path)
    return out


def save_learned(lm: LoadedModel, learned: dict) -> None:
    calibration.write_json(lm.calibration.learned_path, learned, "what the controller learnt")


def load(
    name_or_path: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    warm_up: bool = True,
    progress: Callable[[str], None] | None = None,
) -> LoadedModel:
    """Load a model by registered name (pulled on first use), directory, .gguf or hub id.

    `dtype` "auto" (or None) on a CPU measures which precision is fastest here
    (`precision.choose_cpu_precision`, once per CPU and model, cached); elsewhere it
    follows the rule.
    An explicit dtype (bfloat16, float16, float32, int8) always wins."""
    name_or_path = name_or_path or models.DEFAULT_MODEL
    say = progress or (lambda msg: log.info("%s", msg))
    kind, path = models.resolve(name_or_path)
    dev = pick_device(device)
    asked = parse_precision(dtype)
    if asked == "int8" and dev.type != "cpu":
        raise models.ModelError(f"dtype int8 runs on CPU only (device {dev}); use bfloat16 or float16 there")
    kwargs: dict[str, Any] = {}
    if kind == "registry":
        assert path is not None  # resolve gives a registered model its folder
        if not models.is_ready(path):
            say(f"preparing {name_or_path} (download, verify, convert; once)")
            models.pull(name_or_path, progress=progress)
        src = str(path)
    elif kind == "local" and path is not None and path.suffix == ".gguf":
        src, kwargs["gguf_file"] = str(path.parent), path.name
    elif kind == "local" and path is not None:
        src = str(path)
    else:
        src = name_or_path  # a hub id: works only where the hub is reachable
    if dev.type == "cpu" and "SPECLSP_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["SPECLSP_THREADS"]))

    # The file the tokenizer comes from: a reload (or another precision) reuses it.
    tokenizer_file = Path(src) / kwargs["gguf_file"] if "gguf_file" in kwargs else Path(src) / "tokenizer.json"

    def build(p: str, reason: str) -> LoadedModel:
        say(f"loading {name_or_path} on {dev} as {p}")
        t0 = time.perf_counter()
        try:
            tok = shared_tokenizer(tokenizer_file, lambda: AutoTokenizer.from_pretrained(src, **kwargs), "transformers")
            model = AutoModelForCausalLM.from_pretrained(src, dtype=LOAD_DTYPES.get(p, DTYPES[p]), **kwargs)
        except (OSError, ValueError, RuntimeError) as e:
            raise models.ModelError(f"could not load model {name_or_path}: {str(e).splitlines()[0]}") from e
        model.to(dev).eval()  # type: ignore[arg-type]  # transformers' stubs: to() takes a device too
        lm = LoadedModel(model, tok, dev, DTYPES[p], name_or_path, p, reason)
        if p == "int8":
            to_int8(lm, src, kwargs.get("gguf_file"))
        log.info("loaded %s as %s in %.1fs", name_or_path, p, time.perf_counter() - t0)
        return lm

    if asked is not None:
        lm = build(asked, "asked for")
    elif dev.type != "cpu":
        lm = build(rule_precision(dev), f"the rule for {dev.type}")
    else:
        lm = precision.choose_cpu_precision(
            build, lambda lm: to_int8(lm, src, kwargs.get("gguf_file")), name_or_path, say
        )
    if warm_up:
        say("warming up")
        log.info("warm-up took %.2fs", lm.warm_up())
    return lm


def to_int8(lm: LoadedModel, src: str, gguf_file: str | None = None) -> None:
    """Quantize a float32 model's linear layers to int8 in place (quant.py), with the
    quantized weights cached per source."""
    source = str(Path(src) / gguf_file) if gguf_file else src
    n = quant.quantize(lm.model, quant.cache_file(models.cache_dir(), source))
    lm.precision, lm.dtype = "int8", torch.float32
    log.info("int8 weights in %d linear layers", n)
