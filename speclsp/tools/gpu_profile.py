"""What a verify pass costs on an accelerator, for chains and token trees (scripts/gpu-profile.sh).

Builds randomly initialised models with the real Qwen2.5-Coder 0.5B and 1.5B
configurations (weights do not change what a forward costs, and a GPU machine here has no
network for real ones), then for contexts of 512 to 4,096 cached tokens times:

- prefill: one forward over the whole context (tokens per second);
- chain n: one causal forward over the pending token and n drafted tokens;
- tree n:  one forward over the pending token and an n-node tree (4 branches, then
           chains), with the tree mask and depth positions the engine uses.

Writes JSON: {"device", "dtype", "torch", "transformers", "models": {name: {"prefill_tok_s":
{ctx: ...}, "chain": {ctx: {n: seconds}}, "tree": {ctx: {n: seconds}}}}}. Needs only torch
and transformers (and this file's package): no pygls, no tokenizer, no network.
`speclsp bench project --costs FILE` turns it into predicted tokens per second.

    python -m speclsp.tools.gpu_profile --out gpu-costs.json [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from typing import Any

import torch

from ..local.treeattn import tree_inputs

CONFIGS: dict[str, dict[str, Any]] = {
    # Qwen2.5-Coder-0.5B and -1.5B as published (config.json); vocabulary 151,936.
    "qwen2.5-coder-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    ),
    "qwen2.5-coder-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    ),
    # For testing the script itself on a CPU.
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    ),
}
COMMON: dict[str, Any] = dict(
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_theta=1e6,
    rms_norm_eps=1e-6,
    use_sliding_window=False,
    attn_implementation="sdpa",
)
# Drafted nodes per pass (the pending token makes one more): powers of two and the size
# just below each 16/32/64/128-token edge, since kernels work in tiles of rows and a pass
# can cost the same up to a tile's end and jump after it (as on the CPU; see calibration.CALIBRATED_KS).
SIZES = (1, 2, 4, 8, 15, 16, 31, 32, 63, 64, 127, 128)
CONTEXTS = (512, 1024, 2048, 4096)


def build(name: str, device: torch.device, dtype: torch.dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**CONFIGS[name], **COMMON)
    torch.manual_seed(0)
    with torch.device(device):
        # PreTrainedModel.to is wrapped with functools.wraps, whose typeshed type does not bind self
        model = Qwen2ForCausalLM(config).to(dtype).eval()  # type: ignore[arg-type]
    return model


def tree_parents(n: int, width: int = 4) -> list[int]:
    """An n-node tree: `width` children of the root, then each branch grows in turn."""
    parents: list[int] = []
    tips: list[int] = []
    for i in range(n):
        if len(tips) < width:
            parents.append(-1)
            tips.append(i)
        else:
            b = i % width
            parents.append(tips[b])
            tips[b] = i
    return parents


class Timer:
    def __init__(self, model, device):
        from transformers import DynamicCache

        self.model, self.device = model, device
        self.arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.DynamicCache = DynamicCache

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    @torch.inference_mode()
    def run(self, cache, ids, **kw):
        return self.model(input_ids=ids, use_cache=True, logits_to_keep=0, **kw, **{self.arg: cache})

    def timed(self, fn, repeats: int) -> float:
        best = float("inf")
        for _ in range(repeats):
            self.sync()
            t0 = time.perf_counter()
            fn()
            self.sync()
            best = min(best, time.perf_counter() - t0)
        return best


def profile(name: str, device: torch.device, dtype: torch.dtype, contexts, sizes, repeats: int, say) -> dict:
    model = build(name, device, dtype)
    t = Timer(model, device)
    out: dict = {"prefill_tok_s": {}, "chain": {}, "tree": {}}
    gen = torch.Generator().manual_seed(1)
    for ctx in contexts:
        ids = torch.randint(0, 150000, (1, ctx + 1 + max(sizes)), generator=gen).to(device)
        cache = t.DynamicCache(config=model.config)

        def prefill():
            nonlocal cache
            cache = t.DynamicCache(config=model.config)
            t.run(cache, ids[:, :ctx])

        secs = t.timed(prefill, max(1, repeats // 2))
        out["prefill_tok_s"][ctx] = ctx / secs
        chain, tree = {}, {}
        for n in sizes:
            x = ids[:, ctx : ctx + 1 + n]

            # crop takes minus the tokens to drop (transformers 5.24; 5.17 takes it too)
            def step_chain():
                t.run(cache, x)
                cache.crop(-(1 + n))

            pos, mask = tree_inputs(ctx, tree_parents(n), dtype, device)

            def step_tree():
                t.run(cache, x, position_ids=pos, attention_mask=mask)
                cache.crop(-(1 + n))

            chain[n] = t.timed(step_chain, repeats)
            tree[n] = t.timed(step_tree, repeats)
        out["chain"][ctx], out["tree"][ctx] = chain, tree
        say(
            f"{name} ctx {ctx}: prefill {out['prefill_tok_s'][ctx]:.0f} tok/s, chain 1/64/128 "
            f"{chain[sizes[0]] * 1e3:.1f}/{chain.get(64, chain[sizes[-1]]) * 1e3:.1f}/{chain[sizes[-1]] * 1e3:.1f} ms, "
            f"tree 64 {tree.get(64, tree[sizes[-1]]) * 1e3:.1f} ms"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu-costs.json")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="contexts 512 and 64..; sizes 1, 8, 64 (to test the script)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu-profile: CUDA is not available here (use --device cpu to test the script)", file=sys.stderr)
        return 1
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    contexts, sizes = ((64, 512), (1, 8, 64)) if args.quick else (CONTEXTS, SIZES)
    say = lambda m: print(f"gpu-profile: {m}", file=sys.stderr, flush=True)  # noqa: E731
    import transformers

    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "dtype": args.dtype,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "models": {},
    }
    t0 = time.perf_counter()
    for name in args.models.split(","):
        report["models"][name] = profile(name, device, dtype, contexts, sizes, args.repeats, say)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the model went with profile()'s frame
    report["seconds"] = round(time.perf_counter() - t0, 1)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    say(f"wrote {args.out} in {report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
