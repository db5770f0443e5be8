"""CoDe-style scale split: the teacher draws the early scales, a smaller model the late ones.

Why a baseline: collaborative decoding is what a VAR user picks to save time without
touching the large model (CoDe: VAR-d30 on scales 1..8, VAR-d16 after). Here the small
model is made from the teacher itself: its least influential blocks removed (block
influence 1 - cos(x_in, x_out) on calibration maps, as in layer-pruning baselines) and its
FFNs pruned by Wanda/magnitude to the width at which the pair costs the FLOPs target.
The small model prefills the teacher's scales into its own KV cache before it takes over
(`models.var.cfg_generate`), so its cost counts every scale (no head on the prefilled ones).
Teacher forcing gives the teacher's logits on the early scales and the small model's on
the late ones; fine-tuning trains the small model only (`trainable_module`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import VarcompressError
from ..flops import FlopsReport, var_flops
from ..models.var import VAR, VARConfig, cfg_generate
from ..var_io import build_var
from .neurons import activation_stats, neuron_scores, prune_neurons, select_neurons


def split_flops(large_cfg: VARConfig, small_cfg: VARConfig, split: int) -> FlopsReport:
    """Teacher on scales < split; small model on all scales, without its head where it only prefills."""
    a, b = var_flops(large_cfg), var_flops(small_cfg)
    if split >= len(large_cfg.patch_nums):
        return a
    per = []
    for s in range(len(large_cfg.patch_nums)):
        d = dict(b.per_scale[s])
        if s < split:
            d = {k: v + a.per_scale[s][k] for k, v in d.items()}
            d["head"] = a.per_scale[s]["head"]
        per.append(d)
    return FlopsReport(per)


class ScaleSplitVAR(nn.Module):
    """Looks like a VAR to compare / finetune / eval: forward (teacher forcing) and autoregressive_infer_cfg."""

    def __init__(self, large: VAR, small: VAR, split: int):
        super().__init__()
        S = len(large.patch_nums)
        if not 1 <= split <= S:
            raise VarcompressError(f"split scale {split} must be in [1, {S}]")
        a, b = large.cfg, small.cfg
        if (a.vocab_size, a.Cvae, a.num_classes, tuple(a.patch_nums)) != \
                (b.vocab_size, b.Cvae, b.num_classes, tuple(b.patch_nums)):
            raise VarcompressError("scale split: the small model needs the teacher's vocabulary, classes and scales")
        self.large, self.small, self.split = large, small, int(split)
        self.large.requires_grad_(False)
        for k in ("cfg", "patch_nums", "num_classes", "V", "Cvae", "first_l", "L", "begin_ends"):
            object.__setattr__(self, k, getattr(large, k))

    @property
    def pos_1LC(self) -> torch.Tensor:
        return self.large.pos_1LC

    @property
    def vae(self):
        return self.large.vae

    @property
    def trainable_module(self) -> VAR:
        return self.small

    def attach_vae(self, vae) -> "ScaleSplitVAR":
        self.large.attach_vae(vae)
        self.small.attach_vae(vae)
        return self

    def flops(self) -> FlopsReport:
        return split_flops(self.large.cfg, self.small.cfg, self.split)

    def forward(self, label_B: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor) -> torch.Tensor:
        n = self.begin_ends[self.split - 1][1]
        with torch.no_grad():
            early = self.large(label_B, x_BLCv_wo_first_l)[:, :n]
        if self.split == len(self.patch_nums):
            return early
        return torch.cat((early, self.small(label_B, x_BLCv_wo_first_l)[:, n:]), dim=1)

    @torch.no_grad()
    def autoregressive_infer_cfg(self, B: int, label_B=None, g_seed: int | None = None, cfg: float = 1.5,
                                 top_k: int = 0, top_p: float = 0.0, more_smooth: bool = False,
                                 return_idx: bool = False):
        S = len(self.patch_nums)
        drawers = [self.large] * self.split + [self.small] * (S - self.split)
        return cfg_generate(drawers, self.vae, B, label_B, g_seed, cfg, top_k, top_p, more_smooth, return_idx)


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
