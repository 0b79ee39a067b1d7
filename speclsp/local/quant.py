"""int8 weights on CPU: weight-only int8 linear layers, quantized once and cached.

Every `nn.Linear` whose shape the kernel takes (and the lm_head, the largest single read of
a decode step) keeps its weight as int8 with one bf16 scale per output row (symmetric,
absmax / 127), and multiplies with torch's `_weight_int8pack_mm`: bf16 activations in,
bf16 out, fp32 accumulation. Everything else (embeddings, norms, attention, the residual
stream) stays float32, so a CPU without bf16 hardware never runs attention in bf16.

Prefill chunks (more than `DENSE_ROWS` rows) dequantize the weight and multiply densely
instead, in the dense dtype this CPU multiplies fastest (`dense_dtype`: bf16 with bf16
hardware, else float32): the int8 kernel's cost grows with the rows, and at prefill sizes
it is several times the dense matmul's (figures: docs/decisions.md). Verify
passes (at most 65 rows) and one-token steps always take the int8 kernel, whose rows are
bit-identical whatever the batch, so the lossless property never depends on the path.

Why this kernel: it reads a quarter of float32's bytes per weight, so a memory-bound
decode step is faster, and each output row depends on its own input row only (no
activation quantization over the batch, as torch's dynamic int8 does): a verify pass over
k tokens gives every row exactly what a one-token step gives it, so speculation stays
lossless against int8 greedy of the same weights. Fed float32 activations the same kernel
is ~10x slower, hence the casts around it.

The quantized weights are saved once per model (`int8.safetensors` under the cache's
`quantized/` folder, keyed by the model's source) and loaded from there on the next start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

DENSE_ROWS = 80  # more rows than a verify pass (1 + 64): a prefill chunk
FORMAT = 3  # bumped when the saved layout changes: an older file is quantized again


def supported(linear: nn.Linear) -> bool:
    """Shapes the CPU kernel handles (others crash it on AVX-512): K % 32 (rows are
    padded to a multiple of 16)."""
    return linear.weight.shape[1] % 32 == 0


class Int8Linear(nn.Module):
    qweight: torch.Tensor  # registered buffers (nn.Module's stubs type them Tensor | Module)
    scales: torch.Tensor
    """y = x W^T + b with W stored as int8 rows times a bf16 scale per row."""

    def __init__(
        self, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None, out_features: int | None = None
    ):
        super().__init__()
        self.register_buffer("qweight", qweight)  # [N', K] int8, N' = N padded to a multiple of 16
        self.register_buffer("scales", scales)  # [N'] bf16
        self.bias = None if bias is None else nn.Parameter(bias.float(), requires_grad=False)  # [N] fp32
        self.in_features = qweight.shape[1]
        self.out_features = out_features or qweight.shape[0]

    @classmethod
    def quantize(cls, linear: nn.Linear) -> Int8Linear:
        w = linear.weight.detach()  # [N, K]
        n = w.shape[0]
        if n % 16:  # zero rows the output drops again
            w = torch.cat([w, w.new_zeros(16 - n % 16, w.shape[1])])
        amax = w.abs().amax(dim=1).float().clamp(min=1e-12)  # [N']
        # In place on one float copy: a chain of temporaries took several times as long and
        # held several copies of the weights.
        q = w.to(torch.float32, copy=True).mul_((127.0 / amax)[:, None]).round_().clamp_(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(q, (amax / 127.0).to(torch.bfloat16), bias, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape  # [..., K]
        x2 = x.reshape(-1, shape[-1])  # [M, K]
        if x2.shape[0] > DENSE_ROWS:
            dt = dense_dtype()
            y = (x2.to(dt) @ self.qweight.to(dt).T) * self.scales.to(dt)  # [M, N'], a scale per column
        else:
            y = torch.ops.aten._weight_int8pack_mm(x2.to(torch.bfloat16), self.qweight, self.scales)
        if y.shape[-1] != self.out_features:
            y = y[:, : self.out_features]
        y = y.to(x.dtype).reshape(*shape[:-1], self.out_features)  # [..., N]
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


_DENSE: list[torch.dtype] = []


def dense_dtype() -> torch.dtype:
    """bf16 or float32, whichever multiplies a prefill-sized matrix faster here (timed
    once per process, a few ms: on a CPU without bf16 hardware bf16 is several times slower)."""
    if not _DENSE:
        import time

        a = torch.randn(128, 896)
        b = torch.randn(896, 896)
        best = {}
        for dt in (torch.bfloat16, torch.float32):
            x, w = a.to(dt), b.to(dt)
            x @ w
            t0 = time.perf_counter()
            for _ in range(3):
                x @ w
            best[dt] = time.perf_counter() - t0
        _DENSE.append(min(best, key=lambda d: best[d]))
        log.info("int8 prefill multiplies in %s", str(_DENSE[0]).removeprefix("torch."))
    return _DENSE[0]


def _linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear) and supported(m)]


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def quantize(model: PreTrainedModel, cache: Path | None = None) -> int:
    """Replace the model's linear layers (lm_head included) by `Int8Linear`, in place; the
    rest is cast to float32. With `cache`, the quantized weights are read from that file
    when it matches this model, else computed and written there. Returns the layers replaced."""
    if getattr(model.config, "tie_word_embeddings", False):
        # The head gets its own (quantized) copy; the embedding keeps its float rows.
        head = model.get_output_embeddings()
        if isinstance(head, nn.Linear) and head.weight is model.get_input_embeddings().weight:
            head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
        model.config.tie_word_embeddings = False
    targets = _linears(model)
    saved = _read(cache, targets) if cache is not None else None
    for name, lin in targets:
        if saved is not None:
            q = Int8Linear(saved[f"{name}.qweight"], saved[f"{name}.scales"], lin.bias, lin.out_features)
        else:
            q = Int8Linear.quantize(lin)
        _set(model, name, q)
    dense_dtype()  # timed now, not in the first prefill
    model.float()  # norms, embeddings, biases; int8 buffers keep their dtype
    for name, _ in targets:  # model.float() cast the scales too
        m = model.get_submodule(name)
        m.scales = m.scales.to(torch.bfloat16)
    if cache is not None and saved is None:
        _write(cache, model, [n for n, _ in targets])
    return len(targets)


def cache_file(root: Path, source: str) -> Path:
    """Where the quantized weights of the model at `source` (a directory, a file or a hub
    id) are kept: keyed by its path and the modification time of its files."""
    p = Path(source)
    stamp = ""
    if p.exists():
        files = sorted(f for f in (p.iterdir() if p.is_dir() else [p]) if f.is_file())
        stamp = ";".join(f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files)
    key = hashlib.sha256(f"{FORMAT}|{p.resolve() if p.exists() else source}|{stamp}".encode()).hexdigest()[:16]
    return root / "quantized" / f"{key}.int8.safetensors"


def _read(path: Path, targets: list[tuple[str, nn.Linear]]) -> dict[str, torch.Tensor] | None:
    from safetensors import SafetensorError
    from safetensors.torch import load

    if not path.is_file():
        return None
    try:
        # Read into memory, not mapped: a cache file truncated or rewritten in place under a
        # running server would kill it with SIGBUS at its next forward.
        saved = load(path.read_bytes())
        for name, lin in targets:
            n, k = lin.weight.shape
            n += -n % 16
            q, sc = saved[f"{name}.qweight"], saved[f"{name}.scales"]
            if q.shape != (n, k) or sc.shape != (n,):
                raise ValueError(f"{name} has another shape")
            if q.dtype != torch.int8 or sc.dtype != torch.bfloat16:
                raise ValueError(f"{name} has another dtype")
        return saved
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        log.warning("ignoring the cached int8 weights %s (%s); quantizing again", path, e)
        return None


def _write(path: Path, model: PreTrainedModel, names: list[str]) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for name in names:
        m = model.get_submodule(name)
        assert isinstance(m, Int8Linear)
        tensors[f"{name}.qweight"] = m.qweight.contiguous()
        tensors[f"{name}.scales"] = m.scales.contiguous()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata={"format": json.dumps(FORMAT)})
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not save the int8 weights to %s: %s", path, e)
