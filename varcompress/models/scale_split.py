"""CoDe-style scale split model: the teacher draws the early scales, a smaller model the late ones.

The small model prefills the teacher's scales into its own KV cache before it takes over
(`models.var.cfg_generate`), so its cost counts every scale (no head on the prefilled ones).
Teacher forcing gives the teacher's logits on the early scales and the small model's on
the late ones; fine-tuning trains the small model only (`trainable_module`). How the small
model is made from the teacher: `prune.split`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import VarcompressError
from ..flops import FlopsReport, var_flops
from .var import VAR, VARConfig, cfg_generate


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
