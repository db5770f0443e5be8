"""Per-block runners of the engine: dense blocks and the activated (gated) blocks of `convert`.

A runner is called once per scale with that scale's rows (2B, n, C), the block's six
adaLN modulations and its K/V buffers, and returns the block output. The gated runner
mirrors `convert.gated_block.GatedBlock` in cached generation exactly (same selection,
same reconstruction of skipped tokens), with the engine's attention (preallocated
cache holding only the kept tokens: static offsets per scale) and `FastExpertFFN`.
"""
from __future__ import annotations

import copy

import torch

from ..errors import VarcompressError
from ..models.var_blocks import AdaLNSelfAttn, SelfAttention
from .dense import AttnW, FFNW, block_update
from .experts import FastExpertFFN


def _offsets(counts: list[int]) -> list[tuple[int, int]]:
    out, cur = [], 0
    for c in counts:
        out.append((cur, cur + c))
        cur += c
    return out


class DenseRunner:
    graph_safe = True

    def __init__(self, block, patch_nums, eps: float, dtype, device):
        self.attn = AttnW.from_module(block.attn, dtype, device)
        self.ffn = FFNW.from_module(block.ffn, dtype, device)
        self.eps = eps
        self.offsets = _offsets([pn * pn for pn in patch_nums])
        self.kv_len = self.offsets[-1][1]

    def state_buffers(self, rows: int, C: int, dtype, device) -> dict:
        return {}

    def __call__(self, x, mod, kc, vc, si: int, st: dict) -> torch.Tensor:
        bg, ed = self.offsets[si]
        return block_update(self.attn, self.ffn, x, mod, self.eps, kc, vc, bg, ed)


class GatedRunner:
    def __init__(self, block, eps: float, dtype, device, dispatch: str = "auto"):
        from ..convert.selector import upsample_tokens

        inner = block.inner
        ffns = block.expert_ffns()
        attn = getattr(inner, "attn", None)
        called = {n.target for n in getattr(inner, "graph", None).nodes if n.op == "call_module"} \
            if hasattr(inner, "graph") else set()
        ffn_name = next((n for n, m in inner.named_modules() if ffns and m is ffns[0]), None)
        if type(inner).__name__ != "AdaLNSelfAttn" or len(ffns) != 1 or not isinstance(attn, SelfAttention) \
                or called != {"ada_lin.0", "ada_lin.1", "ln_wo_grad", "attn", ffn_name}:
            raise VarcompressError("engine: unsupported activated block layout (expected an AdaLNSelfAttn "
                                   "with one ExpertFFN); use the model's autoregressive_infer_cfg")
        self.upsample_tokens = upsample_tokens
        self.attn = AttnW.from_module(attn, dtype, device)
        self.ffn = FastExpertFFN(ffns[0], dtype, device, dispatch)
        self.selector = copy.deepcopy(block.selector).to(device=device, dtype=dtype).eval()
        self.eps, self.pns = eps, tuple(block.patch_nums)
        self.keep = [min(k, pn * pn) for k, pn in zip(block.keep_counts, self.pns)]
        self.recon, self.mode = block.reconstruction, block.upsample
        self.first_routed = int(getattr(block, "first_routed_scale", 0))  # earlier scales: dense FFN
        self.offsets = _offsets(self.keep)
        self.kv_len = self.offsets[-1][1]
        S = len(self.pns)
        nxt_sparse = [si + 1 < S and self.keep[si + 1] < self.pns[si + 1] ** 2 for si in range(S)]
        self.save_x = [s and self.selector.kind == "residual" for s in nxt_sparse]
        self.cache = int(getattr(block, "cache_scale", 0))  # reconstruction "cached": FastVAR's fixed scale
        later_sparse = any(self.keep[s] < self.pns[s] ** 2 for s in range(self.cache + 1, S))
        self.save_u = [(s and self.recon == "prev_scale") or (self.recon == "cached" and si == self.cache
                                                              and later_sparse) for si, s in enumerate(nxt_sparse)]

    @property
    def graph_safe(self) -> bool:
        return self.ffn.graph_safe

    def state_buffers(self, rows: int, C: int, dtype, device) -> dict:
        """Static per-scale buffers for the previous-scale maps (used when replaying CUDA graphs)."""
        buf = {}
        for si, pn in enumerate(self.pns):
            for name, need in (("x", self.save_x[si]), ("u", self.save_u[si])):
                if need:
                    buf[(name, si)] = torch.empty(rows, pn * pn, C, dtype=dtype, device=device)
        return buf

    def _save(self, st: dict, si: int, x: torch.Tensor, u: torch.Tensor) -> None:
        for name, need, t in (("x", self.save_x[si], x), ("u", self.save_u[si], u)):
            if need:
                if (name, si) in st:
                    st[(name, si)].copy_(t)
                else:
                    st[("ref", name, si)] = t

    def _load(self, st: dict, name: str, si: int):
        if si < 0:
            return None
        return st.get((name, si), st.get(("ref", name, si)))

    def __call__(self, x, mod, kc, vc, si: int, st: dict) -> torch.Tensor:
        bg, ed = self.offsets[si]
        pn, k = self.pns[si], self.keep[si]
        ffn = self.ffn if si >= self.first_routed else self.ffn.dense
        if k >= pn * pn:
            y = block_update(self.attn, ffn, x, mod, self.eps, kc, vc, bg, ed)
            if self.save_x[si] or self.save_u[si]:
                self._save(st, si, x, y - x)
            return y
        pn_prev = self.pns[si - 1] if si > 0 else 0
        x_prev = self._load(st, "x", si - 1)
        scores = self.selector(x, x_prev if si > 0 else None, pn_prev, pn)
        idx = scores.topk(k, dim=1).indices.sort(dim=1).values
        ie = idx.unsqueeze(-1).expand(-1, -1, x.shape[2])
        xk = x.gather(1, ie)
        yk = block_update(self.attn, ffn, xk, mod, self.eps, kc, vc, bg, ed)
        u_prev = self._load(st, "u", si - 1)
        u_cache = self._load(st, "u", self.cache) if self.recon == "cached" and si > self.cache else None
        if self.recon == "prev_scale" and u_prev is not None and si > 0:
            u = self.upsample_tokens(u_prev, pn_prev, pn, self.mode)
        elif u_cache is not None:
            u = self.upsample_tokens(u_cache, self.pns[self.cache], pn, self.mode)
        else:
            u = torch.zeros_like(x)
        u = u.scatter_(1, ie, yk - xk)
        y = (x + u).scatter_(1, ie, yk)
        self._save(st, si, x, u)
        return y


def make_runners(var, dtype, device, dispatch: str = "auto") -> list:
    eps, runners = var.cfg.norm_eps, []
    for i, block in enumerate(var.blocks):
        if type(block) is AdaLNSelfAttn:
            runners.append(DenseRunner(block, var.patch_nums, eps, dtype, device))
        elif type(block).__name__ == "GatedBlock" and hasattr(block, "inner"):
            runners.append(GatedRunner(block, eps, dtype, device, dispatch))
        else:
            raise VarcompressError(f"engine: block {i} is a {type(block).__name__}, which the engine does not "
                                   "know; use the model's autoregressive_infer_cfg")
    return runners
