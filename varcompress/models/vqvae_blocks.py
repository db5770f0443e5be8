"""Convolutional encoder/decoder of the VAR VQVAE, re-implemented from the published facts.

Module names and the order of operations follow the official `vae_ch160v4096z32.pth`
layout exactly, so that `state_dict()` keys match the released file and fp32 outputs
agree with the official code to float rounding.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm(32, eps=1e-6, affine): the only normalisation the official VQVAE uses."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """Pre-activation residual block; a 1x1 `nin_shortcut` exists only when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        # Identity has no parameters, so the key appears only when the official file has it.
        self.nin_shortcut = (nn.Conv2d(in_channels, out_channels, 1, 1, 0)
                             if in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a fused 1x1 `qkv` conv (official layout)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.C = channels
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, 1, 0)
        self.proj_out = nn.Conv2d(channels, channels, 1, 1, 0)
        self.w_ratio = channels ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H, W).unbind(1)
        q = q.reshape(B, C, H * W).permute(0, 2, 1).contiguous()  # (B, HWq, C)
        k = k.reshape(B, C, H * W).contiguous()  # (B, C, HWk)
        # Scale after the product (not before), the same rounding order as the official code.
        attn = F.softmax(torch.bmm(q, k).mul_(self.w_ratio), dim=2)  # (B, HWq, HWk)
        v = v.reshape(B, C, H * W).contiguous()
        h = torch.bmm(v, attn.permute(0, 2, 1).contiguous())  # (B, C, HWq)
        return x + self.proj_out(h.view(B, C, H, W))


class Downsample2x(nn.Module):
    """Asymmetric pad (right/bottom by one) then a stride-2 3x3 conv with no padding."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample2x(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _attn_or_identity(channels: int, enabled: bool) -> nn.Module:
    return AttnBlock(channels) if enabled else nn.Identity()


class _Level(nn.Module):
    """One resolution level: `block` (ResnetBlocks), `attn` (maybe empty), optional resampler."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def run(self, h: torch.Tensor) -> torch.Tensor:
        for i, blk in enumerate(self.block):
            h = blk(h)
            if len(self.attn) > 0:
                h = self.attn[i](h)
        return h


class _Mid(nn.Module):
    """ResnetBlock -> attention (or identity) -> ResnetBlock at the lowest resolution."""

    def __init__(self, channels: int, using_mid_sa: bool, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = _attn_or_identity(channels, using_mid_sa)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """Image (B,3,H,W) in [-1,1] -> latent (B,z,H/2^(L-1),W/2^(L-1)); attention only at the last level."""

    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int, z_channels: int,
                 using_sa: bool = True, using_mid_sa: bool = True, in_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        n = len(ch_mult)
        in_mult = (1,) + tuple(ch_mult)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        self.down = nn.ModuleList()
        block_in = ch
        for i in range(n):
            block_in, block_out = ch * in_mult[i], ch * ch_mult[i]
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if i == n - 1 and using_sa:
                    attns.append(AttnBlock(block_in))
            level = _Level(blocks, attns)
            if i != n - 1:
                level.downsample = Downsample2x(block_in)
            self.down.append(level)
        self.mid = _Mid(block_in, using_mid_sa, dropout)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            h = level.run(h)
            if i != len(self.down) - 1:
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent -> image; `up[i]` is level i (up.0 = full resolution), run from the last level to 0."""

    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int, z_channels: int,
                 using_sa: bool = True, using_mid_sa: bool = True, out_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        n = len(ch_mult)
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = _Mid(block_in, using_mid_sa, dropout)
        levels: list[nn.Module] = [nn.Identity()] * n
        for i in reversed(range(n)):
            block_out = ch * ch_mult[i]
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if i == n - 1 and using_sa:
                    attns.append(AttnBlock(block_in))
            level = _Level(blocks, attns)
            if i != 0:
                level.upsample = Upsample2x(block_in)
            levels[i] = level
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for i in reversed(range(len(self.up))):
            h = self.up[i].run(h)
            if i != 0:
                h = self.up[i].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
