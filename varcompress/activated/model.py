"""ActivatedVAR: a VAR whose blocks are GatedBlocks; the public interface is unchanged.

`forward(label_B, x_BLCv_wo_first_l)` and `autoregressive_infer_cfg(...)` are the
VAR's own (both drive blocks through `run_blocks`); only KV-cache control differs
(the gated blocks also reset their scale state). `flops()` prices the model with
`varcompress.flops.var_flops` from per-(block, scale) ScaleWork.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..flops import FlopsReport, ScaleWork, var_flops
from ..models.var import VAR, VARConfig
from .config import ConvertConfig, keep_counts
from .gated_block import GatedBlock


class ActivatedVAR(VAR):
    def __init__(self, var_cfg: VARConfig, convert_cfg: ConvertConfig, blocks: list[GatedBlock]):
        with torch.device("meta"):
            super().__init__(var_cfg)  # dense blocks and embeddings built for free, replaced below
        self.blocks = nn.ModuleList(blocks)
        self.convert_cfg = convert_cfg

    @classmethod
    def from_dense(cls, var: VAR, convert_cfg: ConvertConfig, blocks: list[GatedBlock]) -> "ActivatedVAR":
        """Non-block weights copied (not shared) from `var`; blocks as given."""
        model = cls(var.cfg, convert_cfg, blocks)
        rest = {k: v.detach().clone() for k, v in var.state_dict().items() if not k.startswith("blocks.")}
        missing, unexpected = model.load_state_dict(rest, strict=False, assign=True)
        assert not unexpected and all(k.startswith("blocks.") for k in missing), (missing, unexpected)
        return model.eval().attach_vae(var.vae)

    # ---- cache control ------------------------------------------------------------------------
    def set_kv_caching(self, enable: bool) -> None:
        for block in self.blocks:
            block.kv_caching(enable)

    # ---- knobs (used by the budget allocation) ----------------------------------------------
    def set_top_k(self, top_k: int | list[int]) -> None:
        ks = top_k if isinstance(top_k, list) else [top_k] * len(self.blocks)
        for block, k in zip(self.blocks, ks):
            for m in block.expert_ffns():
                m.top_k = k
        self.convert_cfg = self.convert_cfg.replace(top_k=list(ks) if isinstance(top_k, list) else top_k)

    def set_keep(self, keep_ratio: float | list[float] | list[list[float]]) -> None:
        """Keep ratios: one for the sparse scales, one per scale, or one per-scale list per block."""
        cfg = self.convert_cfg.replace(keep_ratio=keep_ratio)
        for block, ratios in zip(self.blocks, cfg.keep_per_block(len(self.blocks), len(self.patch_nums))):
            block.keep_counts = keep_counts(self.patch_nums, ratios)
        self.convert_cfg = cfg

    # ---- FLOPs -----------------------------------------------------------------------------------
    def scale_work(self) -> list[list[ScaleWork]]:
        """Static work per (block, scale): kept tokens, kept keys so far, active neurons, router/selector."""
        return [[blk.scale_work(s) for s in range(len(self.patch_nums))] for blk in self.blocks]

    def flops(self, work: list[list[ScaleWork]] | None = None) -> FlopsReport:
        """Analytic FLOPs of cached generation per image with CFG (static work unless given)."""
        return var_flops(self.cfg, self.scale_work() if work is None else work)

    def budget(self) -> dict:
        """Transformer GFLOPs per image (CFG) of this model and of the dense VAR, and their ratio."""
        rep, dense = self.flops(), var_flops(self.cfg)
        return {"transformer_gflops": rep.transformer, "dense_transformer_gflops": dense.transformer,
                "fraction": rep.transformer / dense.transformer, "by_component": rep.by_component,
                "top_k": [blk.expert_ffns()[0].top_k for blk in self.blocks],
                "keep_counts": list(self.blocks[0].keep_counts),   # the first block's
                "keep_counts_per_block": [list(blk.keep_counts) for blk in self.blocks]}

    @contextmanager
    def record_work(self):
        """Record the work actually executed (per block, per scale call) while inside the context.

        Yields a list that, on exit, holds `work[b][s]` (ScaleWork, averaged over calls) for
        `flops(work=...)`; useful for dynamic-k routing, whose cost depends on the data.
        """
        recs = [[] for _ in self.blocks]
        for blk, r in zip(self.blocks, recs):
            blk.recorder = r
        out: list[list[ScaleWork]] = []
        try:
            yield out
        finally:
            for blk in self.blocks:
                blk.recorder = None
            for b, r in enumerate(recs):
                row = []
                for s in range(len(self.patch_nums)):
                    ws = [w for si, w in r if si == s]
                    row.append(_mean_work(ws) if ws else self.blocks[b].scale_work(s))
                out.append(row)


def _mean_work(ws: list[ScaleWork]) -> ScaleWork:
    n = len(ws)
    return ScaleWork(tokens=ws[0].tokens, keys=ws[0].keys, ffn_hidden=sum(w.ffn_hidden for w in ws) / n,
                     router_flops=sum(w.router_flops for w in ws) / n,
                     selector_flops=sum(w.selector_flops for w in ws) / n, kv_tokens=ws[0].kv_tokens)
