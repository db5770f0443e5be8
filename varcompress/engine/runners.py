"""Per-block runners of the engine: dense blocks and the activated (gated) blocks of `convert`.

A runner is called once per scale with that scale's rows (2B, n, C), the block's six
adaLN modulations and its K/V buffers, and returns the block output. The gated runner
runs `convert.gated_block.GatedBlock`'s token path (`convert.token_path`: same selection,
same reconstruction of skipped tokens) with the engine's attention (preallocated cache
holding only the kept tokens, or every token when skipped tokens write K/V: static offsets
per scale) and `FastExpertFFN`.
`RUNNERS` maps block types to runners (exact type).
"""
from __future__ import annotations

import copy

import torch

from ..activated.fx_pass import traced_type
from ..activated.gated_block import GatedBlock
from ..activated.token_path import Carry, gather_tokens, keep_indices, merge_scale, scale_scores
from ..errors import VarcompressError
from ..models.var_blocks import AdaLNSelfAttn, SelfAttention
from .dense import FFNW, AttnW, block_update, block_update_kv_rows, modulate
from .experts import FastExpertFFN


def _offsets(counts: list[int]) -> list[tuple[int, int]]:
    out, cur = [], 0
    for c in counts:
        out.append((cur, cur + c))
        cur += c
    return out


class DenseRunner:
    graph_safe = True

    def __init__(self, block, patch_nums, eps: float, dtype, device, dispatch: str = "auto"):  # no experts
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
    def __init__(self, block, patch_nums, eps: float, dtype, device, dispatch: str = "auto"):
        inner = block.inner
        ffns = block.expert_ffns()
        attn = getattr(inner, "attn", None)
        called = {n.target for n in getattr(inner, "graph", None).nodes if n.op == "call_module"} \
            if hasattr(inner, "graph") else set()
        ffn_name = next((n for n, m in inner.named_modules() if ffns and m is ffns[0]), None)
        self.kv_all = block.skipped_kv == "computed"  # its graph calls the attention through split_attention_rows
        expected = {"ada_lin.0", "ada_lin.1", "ln_wo_grad", ffn_name} | (set() if self.kv_all else {"attn"})
        if traced_type(inner) is not AdaLNSelfAttn or len(ffns) != 1 or not isinstance(attn, SelfAttention) \
                or called != expected:
            raise VarcompressError("engine: unsupported activated block layout (expected an AdaLNSelfAttn "
                                   "with one ExpertFFN); use the model's autoregressive_infer_cfg")
        self.attn = AttnW.from_module(attn, dtype, device)
        self.ffn = FastExpertFFN(ffns[0], dtype, device, dispatch)
        self.selector = copy.deepcopy(block.selector).to(device=device, dtype=dtype).eval()
        self.eps, self.pns = eps, tuple(block.patch_nums)
        self.keep = [min(k, pn * pn) for k, pn in zip(block.keep_counts, self.pns)]
        self.rec = block.rec
        self.first_routed = block.first_routed_scale  # earlier scales: dense FFN
        self.offsets = _offsets([pn * pn for pn in self.pns] if self.kv_all else self.keep)
        self.kv_len = self.offsets[-1][1]
        S = len(self.pns)
        sparse = [self.keep[si] < self.pns[si] ** 2 for si in range(S)]
        self.save_x = [si + 1 < S and sparse[si + 1] and self.selector.kind == "residual" for si in range(S)]
        self.save_u = [self.rec.keeps_update(si, sparse) for si in range(S)]

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
        idx = keep_indices(scale_scores(self.selector, x, self._load(st, "x", si - 1), self.pns, si), k)
        xk = gather_tokens(x, idx)
        if self.kv_all:
            h = modulate(x, self.eps, mod[2], mod[4])
            yk = block_update_kv_rows(self.attn, ffn, xk, gather_tokens(h, idx), h, mod, self.eps, kc, vc, bg, ed)
        else:
            yk = block_update(self.attn, ffn, xk, mod, self.eps, kc, vc, bg, ed)
        carry = Carry(u_prev=self._load(st, "u", si - 1), u_cache=self._load(st, "u", self.rec.cache_scale))
        y, u = merge_scale(x, xk, yk, idx, self.rec.base(si, x, carry), inplace=True)
        self._save(st, si, x, u)
        return y


# block type (exact) -> runner(block, patch_nums, eps, dtype, device, dispatch)
RUNNERS = {AdaLNSelfAttn: DenseRunner, GatedBlock: GatedRunner}


def make_runners(var, dtype, device, dispatch: str = "auto") -> list:
    eps, runners = var.cfg.norm_eps, []
    for i, block in enumerate(var.blocks):
        runner = RUNNERS.get(type(block))
        if runner is None:
            raise VarcompressError(f"engine: block {i} is a {type(block).__name__}, which the engine does not "
                                   "know; use the model's autoregressive_infer_cfg")
        runners.append(runner(block, var.patch_nums, eps, dtype, device, dispatch))
    return runners
