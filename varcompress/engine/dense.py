"""Dense VAR blocks, prepared once for fast cached generation.

`AttnW`/`FFNW` hold plain tensors in the engine's dtype and device: the qkv weight with
its bias fused once (q_bias, zero_k_bias, v_bias), exp(clamped scale_mul) precomputed,
and the FFN. `Prepared` computes the adaLN modulations of every block (and of the head)
once per generation: the class condition is the same at every scale. Attention writes K/V into a preallocated
(2B, H, L, head_dim) buffer per block and attends to the prefix [0, end) of it, so
every scale has static shapes (the basis for torch.compile and CUDA graphs).

The arithmetic follows `models/var_blocks.py` op for op (LN, then *(1+scale), +shift;
residual `x + out * gamma`), so fp32 logits agree with the eager path to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AttnW:
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor
    proj_w: torch.Tensor
    proj_b: torch.Tensor
    scale_mul: torch.Tensor | None  # (1, H, 1, 1) = exp(clamp_max(scale_mul_1H11, ln 100)), or None
    scale: float
    heads: int

    @classmethod
    def from_module(cls, attn, dtype, device) -> "AttnW":
        cv = lambda t: t.detach().to(device=device, dtype=dtype).contiguous()  # noqa: E731
        bias = torch.cat((attn.q_bias, attn.zero_k_bias, attn.v_bias))
        sm = None
        if attn.attn_l2_norm:
            sm = cv(attn.scale_mul_1H11.detach().clamp_max(attn.max_scale_mul).exp())
        return cls(cv(attn.mat_qkv.weight), cv(bias), cv(attn.proj.weight), cv(attn.proj.bias), sm,
                   float(attn.scale), int(attn.num_heads))

    def qkv(self, h: torch.Tensor):
        """(N, n, C) -> q, k, v (N, H, n, hd), normalised as the official attention."""
        N, n, C = h.shape
        q, k, v = F.linear(h, self.qkv_w, self.qkv_b).view(N, n, 3, self.heads, C // self.heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        if self.scale_mul is not None:
            q = F.normalize(q, dim=-1).mul(self.scale_mul)
            k = F.normalize(k, dim=-1)
        return q, k, v

    def attend_rows(self, hq: torch.Tensor, h: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor,
                    bg: int, ed: int) -> torch.Tensor:
        """Attention of the query rows hq (N, k, C) over cache[:ed] after writing the K/V of every row
        of h (N, n, C) at bg..ed-1: a gated block whose skipped tokens still write K/V."""
        (N, k, C), n, hd = hq.shape, h.shape[1], hq.shape[2] // self.heads
        q = F.linear(hq, self.qkv_w[:C], self.qkv_b[:C]).view(N, k, self.heads, hd).transpose(1, 2)
        kv = F.linear(h, self.qkv_w[C:], self.qkv_b[C:]).view(N, n, 2, self.heads, hd)
        kk, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.scale_mul is not None:
            q = F.normalize(q, dim=-1).mul(self.scale_mul)
            kk = F.normalize(kk, dim=-1)
        kc[:, :, bg:ed].copy_(kk)
        vc[:, :, bg:ed].copy_(v)
        o = F.scaled_dot_product_attention(q, kc[:, :, :ed], vc[:, :, :ed], scale=self.scale)
        return F.linear(o.transpose(1, 2).reshape(N, k, C), self.proj_w, self.proj_b)

    def __call__(self, h: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, bg: int, ed: int) -> torch.Tensor:
        """Attention of the rows of h (keys bg..ed-1 of the cache) over cache[:ed]; writes its K/V."""
        N, n, C = h.shape
        q, k, v = self.qkv(h)
        kc[:, :, bg:ed].copy_(k)
        vc[:, :, bg:ed].copy_(v)
        o = F.scaled_dot_product_attention(q, kc[:, :, :ed], vc[:, :, :ed], scale=self.scale)
        return F.linear(o.transpose(1, 2).reshape(N, n, C), self.proj_w, self.proj_b)


@dataclass
class FFNW:
    fc1_w: torch.Tensor
    fc1_b: torch.Tensor
    fc2_w: torch.Tensor
    fc2_b: torch.Tensor
    approximate: str = "tanh"

    @classmethod
    def from_module(cls, ffn, dtype, device) -> "FFNW":
        cv = lambda t: t.detach().to(device=device, dtype=dtype).contiguous()  # noqa: E731
        return cls(cv(ffn.fc1.weight), cv(ffn.fc1.bias), cv(ffn.fc2.weight), cv(ffn.fc2.bias),
                   ffn.act.approximate)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(F.gelu(F.linear(h, self.fc1_w, self.fc1_b), approximate=self.approximate),
                        self.fc2_w, self.fc2_b)


def modulate(x: torch.Tensor, eps: float, scale1p: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """LN(x) * (1 + scale) + shift (scale1p already holds 1 + scale)."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps).mul_(scale1p).add_(shift)


def block_update(attn, ffn, x, mod, eps, kc, vc, bg, ed) -> torch.Tensor:
    """One adaLN block on rows x (N, n, C); mod = (gamma1, gamma2, 1+scale1, 1+scale2, shift1, shift2)."""
    g1, g2, s1, s2, sh1, sh2 = mod
    x = x + attn(modulate(x, eps, s1, sh1), kc, vc, bg, ed) * g1
    return x + ffn(modulate(x, eps, s2, sh2)) * g2


def block_update_kv_rows(attn, ffn, xk, hq, h, mod, eps, kc, vc, bg, ed) -> torch.Tensor:
    """`block_update` of the kept rows xk whose attention also reads the K/V of the skipped rows:
    hq are xk's attention inputs (modulated), h those of every row of the scale."""
    g1, g2, _, s2, _, sh2 = mod
    x = xk + attn.attend_rows(hq, h, kc, vc, bg, ed) * g1
    return x + ffn(modulate(x, eps, s2, sh2)) * g2


class Prepared:
    """Every weight generation needs, in one dtype/device; built once per Engine.

    In float32 on the model's device nothing large is copied: the tensors are the model's.
    """

    def __init__(self, var, dtype: torch.dtype, device: torch.device):
        self.dtype, self.device = dtype, device
        cv = lambda t: t.detach().to(device=device, dtype=dtype).contiguous()  # noqa: E731
        self.C, self.depth, self.eps = var.C, len(var.blocks), var.cfg.norm_eps
        self.heads = var.cfg.num_heads
        self.ada = [(cv(m.weight), cv(m.bias)) for m in [_ada_lin(b) for b in var.blocks]]
        head_ada = var.head_nm.ada_lin[1]
        self.head_ada = (cv(head_ada.weight), cv(head_ada.bias))
        self.head_w, self.head_b = cv(var.head.weight), cv(var.head.bias)
        self.word_w, self.word_b = cv(var.word_embed.weight), cv(var.word_embed.bias)
        with torch.no_grad():
            self.lvl_pos = cv(var.lvl_pos())
        self.pos_start = cv(var.pos_start)
        self.class_emb = cv(var.class_emb.weight)

    def modulations(self, cond: torch.Tensor):
        """(per-block tuples of six (N, 1, C) tensors, head (1+scale, shift)), once per generation.

        The class condition is the same at every scale, so these are computed once instead of
        at every scale and block; the per-block Linear is the model's own (bit-identical).
        """
        N, C = cond.shape[0], self.C
        sc = F.silu(cond)
        per_block = []
        for w, b in self.ada:
            g1, g2, s1, s2, sh1, sh2 = F.linear(sc, w, b).view(N, 1, 6, C).unbind(2)
            per_block.append((g1, g2, s1 + 1, s2 + 1, sh1, sh2))
        hs, hsh = F.linear(sc, *self.head_ada).view(N, 1, 2, C).unbind(2)
        return per_block, (hs + 1, hsh)

    def logits(self, h: torch.Tensor, head_mod) -> torch.Tensor:
        """Head in float32 over the last hidden states (the eager path computes it in float32)."""
        s1, sh = head_mod
        hn = F.layer_norm(h.float(), (self.C,), eps=self.eps).mul_(s1.float()).add_(sh.float())
        return F.linear(hn.to(self.head_w.dtype), self.head_w, self.head_b).float()


def _ada_lin(block):
    """The adaLN Linear of a dense block or of an activated block's inner graph."""
    inner = getattr(block, "inner", block)
    return getattr(inner.ada_lin, "1")  # nn.Sequential, or a plain Module after an fx rewrite
