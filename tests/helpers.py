"""Tiny random models shared by tests (fixed seeds, CPU, a few KB of weights)."""
from __future__ import annotations

import torch

from varcompress.models.var import VARConfig
from varcompress.var_io import build_var

TINY_PATCH_NUMS = (1, 2, 3, 4)


def tiny_var_config(**kw) -> VARConfig:
    base = dict(depth=2, embed_dim=64, num_heads=2, vocab_size=32, Cvae=8, num_classes=10,
                patch_nums=TINY_PATCH_NUMS, attn_l2_norm=True)
    base.update(kw)
    return VARConfig(**base)


def tiny_var(seed: int = 0, **kw):
    """A random VAR whose every weight matters (no zero biases, non-trivial adaLN)."""
    torch.manual_seed(seed)
    model = build_var(tiny_var_config(**kw))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if "scale_mul" in name else 0.08))
    return model.eval()
