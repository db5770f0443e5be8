"""The VAR transformer block, written from the official format's facts.

Module and parameter names match the official checkpoints, so `state_dict()` keys
load 1:1. Blocks take `(x, cond_BD, attn_bias)` like the official ones; the extra
`scales` argument (which scales the rows of `x` belong to) is ignored by dense blocks
and used by the activated blocks that `convert` swaps in.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FFN(nn.Module):
    """fc1 -> tanh-GELU -> fc2: the pattern the convert pass looks for in the traced graph."""

    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SelfAttention(nn.Module):
    """Multi-head attention with the official biases, optional L2-normalised q/k and a KV cache."""

    def __init__(self, embed_dim: int, num_heads: int, attn_l2_norm: bool):
        super().__init__()
        assert embed_dim % num_heads == 0
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.attn_l2_norm = attn_l2_norm
        if attn_l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(embed_dim, embed_dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.caching = False
        self.cached_k: torch.Tensor | None = None
        self.cached_v: torch.Tensor | None = None

    def kv_caching(self, enable: bool) -> None:
        self.caching, self.cached_k, self.cached_v = enable, None, None

    def project(self, x: torch.Tensor, parts: str = "qkv") -> tuple[torch.Tensor, ...]:
        """(B, L, C) -> the projections named in `parts` ("qkv", "q" or "kv"), each (B, H, L, head_dim),
        normalised when attn_l2_norm; "q" and "kv" let queries and keys come from different rows."""
        B, L, C = x.shape
        rows = {"qkv": slice(0, 3 * C), "q": slice(0, C), "kv": slice(C, 3 * C)}[parts]
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))[rows]
        out = F.linear(x, self.mat_qkv.weight[rows], bias).view(B, L, len(parts), self.num_heads, self.head_dim)
        named = dict(zip(parts, out.permute(2, 0, 3, 1, 4).unbind(0)))
        if self.attn_l2_norm:
            if "q" in named:
                scale_mul = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
                named["q"] = F.normalize(named["q"], dim=-1).mul(scale_mul)
            if "k" in named:
                named["k"] = F.normalize(named["k"], dim=-1)
        return tuple(named[p] for p in parts)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               attn_bias: torch.Tensor | None) -> torch.Tensor:
        """Queries (B, H, Lq, hd) over keys/values (B, H, Lk, hd) after the cached ones (appended when
        caching), then the output projection: (B, Lq, C)."""
        B, H, Lq, hd = q.shape
        if self.caching:
            if self.cached_k is not None:
                k = torch.cat((self.cached_k, k), dim=2)
                v = torch.cat((self.cached_v, v), dim=2)
            self.cached_k, self.cached_v = k, v
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, Lq, H * hd))

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        return self.attend(*self.project(x), attn_bias)


class AdaLNSelfAttn(nn.Module):
    """One VAR block: adaLN-modulated attention and FFN, each gated by its own gamma."""

    def __init__(self, embed_dim: int, cond_dim: int, num_heads: int, mlp_ratio: float,
                 attn_l2_norm: bool, norm_eps: float = 1e-6):
        super().__init__()
        self.C = embed_dim
        self.attn = SelfAttention(embed_dim, num_heads, attn_l2_norm)
        self.ffn = FFN(embed_dim, round(embed_dim * mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * embed_dim))

    def modulation(self, cond_BD: torch.Tensor):
        """gamma1, gamma2, scale1, scale2, shift1, shift2, each (B, 1, C)."""
        return self.ada_lin(cond_BD).view(-1, 1, 6, self.C).unbind(2)

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor, attn_bias: torch.Tensor | None,
                scales: tuple[int, int] | None = None) -> torch.Tensor:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.modulation(cond_BD)
        x = x + self.attn(self.ln_wo_grad(x) * (scale1 + 1) + shift1, attn_bias) * gamma1
        x = x + self.ffn(self.ln_wo_grad(x) * (scale2 + 1) + shift2) * gamma2
        return x


class AdaLNBeforeHead(nn.Module):
    """Final adaLN before the vocabulary head."""

    def __init__(self, embed_dim: int, cond_dim: int, norm_eps: float = 1e-6):
        super().__init__()
        self.C = embed_dim
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * embed_dim))

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return self.ln_wo_grad(x) * (scale + 1) + shift
