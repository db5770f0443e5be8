"""Initialisation for training a VAR from scratch (the testbed teachers).

Small-std normal weights, adaLN gates (gamma) near zero so every block starts as
the identity, and a small head: the usual recipe for stable adaLN transformers.
"""
from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def init_var_weights(var, std: float = 0.02, adaln: float = 0.5, adaln_gamma: float = 1e-5,
                     head: float = 0.02) -> None:
    for m in var.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.Embedding):
            nn.init.trunc_normal_(m.weight, std=std)
    nn.init.trunc_normal_(var.pos_start, std=std)
    nn.init.trunc_normal_(var.pos_1LC, std=std)
    C, depth = var.C, len(var.blocks)
    for block in var.blocks:
        lin = block.ada_lin[-1]
        lin.weight[2 * C:].mul_(adaln)
        lin.weight[:2 * C].mul_(adaln_gamma)
        block.attn.proj.weight.div_(math.sqrt(2 * depth))
        block.ffn.fc2.weight.div_(math.sqrt(2 * depth))
        block.attn.q_bias.zero_()
        block.attn.v_bias.zero_()
    var.head_nm.ada_lin[-1].weight.mul_(adaln)
    var.head.weight.mul_(head / std)
