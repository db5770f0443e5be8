"""The CoDe-style scale split baseline (`models.scale_split.ScaleSplitVAR`) made from the teacher.

Why a baseline: collaborative decoding is what a VAR user picks to save time without
touching the large model (CoDe: VAR-d30 on scales 1..8, VAR-d16 after). Here the small
model is made from the teacher itself: its least influential blocks removed (block
influence 1 - cos(x_in, x_out) on calibration maps, as in layer-pruning baselines) and its
FFNs pruned by Wanda/magnitude to the width at which the pair costs the FLOPs target.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import VarcompressError
from ..models.scale_split import ScaleSplitVAR, split_flops
from ..models.var import VAR, VARConfig
from ..var_io import build_var
from .neurons import activation_stats, neuron_scores, prune_neurons, select_neurons


@torch.no_grad()
def block_influence(var: VAR, labels: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per block: 1 - mean cosine(input, output) over calibration tokens (small = the block changes little)."""
    sims = [[] for _ in var.blocks]
    hooks = [blk.register_forward_hook(lambda m, inp, out, b=b: sims[b].append(
        nn.functional.cosine_similarity(inp[0].float(), out.float(), dim=-1).mean().item()))
        for b, blk in enumerate(var.blocks)]
    try:
        for i in range(0, len(labels), 8):
            var(labels[i:i + 8], x[i:i + 8])
    finally:
        for h in hooks:
            h.remove()
    return torch.tensor([1 - sum(s) / len(s) for s in sims])


@torch.no_grad()
def drop_blocks(var: VAR, keep: list[int]) -> VAR:
    """A new VAR with only blocks `keep` (in order); everything else copied."""
    cfg = VARConfig.from_dict({**var.cfg.to_dict(), "depth": len(keep)})
    sd = {}
    for k, v in var.state_dict().items():
        if k.startswith("blocks."):
            b, rest = k.split(".", 2)[1:]
            if int(b) in keep:
                sd[f"blocks.{keep.index(int(b))}.{rest}"] = v.clone()
        else:
            sd[k] = v.clone()
    model = build_var(cfg, device=var.pos_1LC.device)
    model.load_state_dict(sd, strict=True)
    return model.eval().attach_vae(var.vae)


def small_hidden_for(var: VAR, depth: int, split: int, target_gflops: float) -> float:
    """FFN width of a depth-`depth` small model at which the split costs target_gflops (linear in the width)."""
    C, H = var.cfg.embed_dim, round(var.cfg.embed_dim * var.cfg.mlp_ratio)

    def at(h: float) -> float:
        small = VARConfig.from_dict({**var.cfg.to_dict(), "depth": depth, "mlp_ratio": h / C})
        return split_flops(var.cfg, small, split).transformer
    f0, f1 = at(0.0), at(float(H))
    return float(H) if f1 <= f0 else (target_gflops - f0) / (f1 - f0) * H  # split at the end: no small model runs


def build_split(var: VAR, target_gflops: float, split: int, depth: int, score: str, compensate: bool,
                calib, min_hidden: int) -> tuple[ScaleSplitVAR, dict]:
    """The FLOPs-matched split model and what was chosen (kept blocks, width)."""
    D, H = var.cfg.depth, round(var.cfg.embed_dim * var.cfg.mlp_ratio)
    if not 1 <= depth <= D:
        raise VarcompressError(f"split: small model depth {depth} must be in [1, {D}]")
    h = math.floor(small_hidden_for(var, depth, split, target_gflops) + 1e-6)
    if h < min_hidden:
        raise VarcompressError(f"split: the FLOPs target needs a small model of depth {depth} with FFNs of {h} "
                               f"neurons (< {min_hidden}); use a later --split-scale or a smaller --small-depth")
    if h > H and split < len(var.patch_nums):
        raise VarcompressError(f"split: the FLOPs target is above what a depth-{depth} small model costs at full "
                               "width; use a larger --small-depth or an earlier --split-scale")
    h = min(h, H)
    bi = block_influence(var, *calib)
    keep = sorted(torch.sort(bi, descending=True, stable=True).indices[:depth].tolist())
    large, small = drop_blocks(var, list(range(D))), drop_blocks(var, keep)  # copies: `var` stays untouched
    stats = activation_stats(small, *calib) if (score == "wanda" or compensate) else None
    small = prune_neurons(small, select_neurons(neuron_scores(small, score, stats), h),
                          stats.means() if compensate else None)
    info = {"split_scale": split, "small_depth": depth, "small_blocks": keep, "small_hidden": h,
            "block_influence": [round(float(v), 6) for v in bi]}
    return ScaleSplitVAR(large, small, split).eval(), info
