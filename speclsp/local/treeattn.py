"""Tree attention inputs: positions by depth and the mask that lets each node see only the
cached prefix, the pending token and its own ancestors. Torch only (the GPU profile
script imports it on machines without the rest of speclsp's dependencies).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def tree_inputs(
    base: int, parents: Sequence[int], dtype: torch.dtype, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(position ids [1, 1 + n], additive mask [1, 1, 1 + n, base + 1 + n]) for the pending
    token (row 0) and n tree nodes under it; node i's parent is `parents[i]` (-1: pending).

    The mask is additive (0 to attend, the dtype's minimum not to), which both the sdpa and
    the eager attention of transformers take as given when it is 4D.
    """
    n = len(parents)
    depth = [0] * (n + 1)
    seen = torch.zeros(n + 1, n + 1, dtype=torch.bool)  # [1 + n, 1 + n] ancestor-or-self
    seen[0, 0] = True
    for i, p in enumerate(parents, start=1):
        up = p + 1  # the parent's row (0: the pending token)
        if not 0 <= up < i:
            raise ValueError(f"node {i - 1}'s parent {p} does not come before it")
        depth[i] = depth[up] + 1
        seen[i] = seen[up]
        seen[i, i] = True
    pos = torch.tensor([[base + d for d in depth]], dtype=torch.long, device=device)
    mask = torch.zeros(1, 1, n + 1, base + n + 1, dtype=dtype)  # [B, 1, Q, KV]
    mask[0, 0, :, base:].masked_fill_(~seen, torch.finfo(dtype).min)
    return pos, mask.to(device)


def gather_path(cache, base: int, rows: Sequence[int], device) -> None:
    """Move cache entries `rows` (absolute positions, ascending) to base, base + 1, ...,
    in every layer (keys and values: [B, H, T, D]); the caller crops what follows."""
    idx = torch.tensor(list(rows), dtype=torch.long, device=device)
    for layer in cache.layers:
        layer.keys[:, :, base : base + len(rows)] = layer.keys.index_select(2, idx)
        layer.values[:, :, base : base + len(rows)] = layer.values.index_select(2, idx)
