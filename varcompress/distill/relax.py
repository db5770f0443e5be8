"""Training-time relaxations and captures, installed on the student as forward hooks.

The convert modules are used as they are; distillation only adds hooks:
- Routers ("st"): the blocks are called with `expert_dispatch="masked"` (a forward pre-hook
  adds the argument), so the expert FFNs compute every expert weighted by the
  straight-through mask (forward = the hard top-k mask, gradient = softmax(scores));
  "gumbel" adds Gumbel noise to the router scores before the top-k and the softmax
  (Gumbel-softmax straight-through); the temperature divides the scores (the top-k
  choice, hence the budget, is unchanged by it).
- Selectors ("st"): the block output is returned unchanged in value, plus
  (p - p.detach()) * (u_computed - u_reconstructed) for every token of a sparse scale,
  where p = sigmoid((score - threshold) / (temperature * std)) is a soft keep gate
  around the top-k threshold, u_computed the token's update when computed (kept tokens:
  their actual update; skipped ones: from a no-grad dense pass of the same block) and
  u_reconstructed what the block gives it when skipped. So dL/dscore tells whether
  computing the token would lower the loss: the straight-through estimator of the
  keep decision, at exactly the inference keep counts. Scores, keep sets and reconstruction
  are the block's own (`convert.token_path`).
Only in training mode (`module.training`), never while KV-caching; eval is the hard path.
"""
from __future__ import annotations

import functools

import torch

from ..activated.experts import ExpertFFN
from ..activated.gated_block import GatedBlock
from ..activated.token_path import Carry, keep_mask, scale_scores, scale_spans


class StudentHooks:
    def __init__(self, student):
        self.blocks: list[GatedBlock] = list(student.blocks)
        self.ffns: list[ExpertFFN] = [m for blk in self.blocks for m in blk.expert_ffns()]
        self.router_mode, self.selector_mode, self.temperature = "off", "off", 1.0
        self.capture_blocks = self.capture_ffn_in = self.capture_scores = self.capture_gates = False
        self.gen: torch.Generator | None = None  # Gumbel noise stream (set per micro-batch)
        self._aux = False
        self.reset()
        self._handles = []
        for b, blk in enumerate(self.blocks):
            self._handles.append(blk.register_forward_pre_hook(self._dispatch_pre_hook, with_kwargs=True))
            self._handles.append(blk.register_forward_hook(functools.partial(self._block_hook, b), with_kwargs=True))
        for m in self.ffns:
            self._handles.append(m.register_forward_pre_hook(self._ffn_pre_hook))
            self._handles.append(m.router.register_forward_hook(functools.partial(self._router_hook, m)))

    def reset(self) -> None:
        self.block_in: dict[int, torch.Tensor] = {}
        self.block_out: dict[int, torch.Tensor] = {}
        self.ffn_in: list[tuple[ExpertFFN, torch.Tensor]] = []
        self.scores: list[tuple[ExpertFFN, torch.Tensor]] = []
        self.gates: list[tuple[torch.Tensor, float]] = []

    def configure(self, router: str, selector: str, temperature: float, blocks: bool = False,
                  ffn_in: bool = False, scores: bool = False, gates: bool = False) -> None:
        self.router_mode, self.selector_mode, self.temperature = router, selector, float(temperature)
        self.capture_blocks, self.capture_ffn_in, self.capture_scores, self.capture_gates = blocks, ffn_in, scores, gates

    @property
    def expert_dispatch(self) -> str:
        """The expert FFNs' dispatch in training: straight-through ("masked") while routers are relaxed."""
        return "masked" if self.router_mode != "off" else "loop"

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    # ---- hooks -------------------------------------------------------------------------------------
    def _dispatch_pre_hook(self, block, args, kwargs):
        if block.training and self.expert_dispatch != "loop" and len(args) < 5 and "expert_dispatch" not in kwargs:
            return args, {**kwargs, "expert_dispatch": self.expert_dispatch}
        return None

    def _ffn_pre_hook(self, ffn, args):
        if self.capture_ffn_in and ffn.training and not self._aux:
            X = args[0].detach().reshape(-1, args[0].shape[-1])
            flag = args[1].routed if len(args) > 1 and args[1] is not None else True  # early scales run dense
            if flag is False:
                return
            self.ffn_in.append((ffn, X[flag] if torch.is_tensor(flag) else X))

    def _router_hook(self, ffn, router, args, out):
        if not router.training or self._aux:
            return None
        if self.capture_scores:
            self.scores.append((ffn, out))
        if ffn.routing != "topk" or self.router_mode == "off":
            return None
        if self.router_mode == "gumbel":
            u = torch.rand(out.shape, generator=self.gen).to(out.device, out.dtype) if self.gen is not None \
                else torch.rand_like(out)
            out = out - torch.log(-torch.log(u.clamp(1e-9, 1 - 1e-9)))
        return out / self.temperature if self.temperature != 1.0 else out

    def _block_hook(self, b, block, args, kwargs, out):
        if not block.training or block.caching or self._aux:
            return None
        x = args[0]
        if self.selector_mode == "st" and any(p.requires_grad for p in block.selector.parameters()):
            bias = args[2] if len(args) > 2 else kwargs.get("attn_bias")
            scales = args[3] if len(args) > 3 else kwargs.get("scales")
            cond = args[1] if len(args) > 1 else kwargs.get("cond_BD")
            dispatch = args[4] if len(args) > 4 else kwargs.get("expert_dispatch", "loop")
            out = self._gate_st(block, x, cond, bias, scales, dispatch, out)
        if self.capture_blocks:
            self.block_in[b], self.block_out[b] = x, out
        return out

    def _gate_st(self, block: GatedBlock, x, cond, bias, scales, dispatch, out):
        pns, rec = block.patch_nums, block.rec
        a, e = scales if scales is not None else (0, len(pns))
        spans = scale_spans(pns, a, e)
        if all(block.keep_counts[s] >= n for s, _, n in spans) or a != 0:
            return out
        with torch.no_grad():
            self._aux = True
            try:
                u_dense = block.run_all(x, cond, bias, scales, dispatch) - x
            finally:
                self._aux = False
        u_hard = (out - x).detach()
        pieces, prev, u_cache = [], None, None
        for s, off, n in spans:
            k, cur = block.keep_counts[s], slice(off, off + n)
            if k >= n:
                pieces.append(out[:, cur])
            else:
                xs = x[:, cur]
                scores = scale_scores(block.selector, xs, None if prev is None else x[:, prev], pns, s).float()
                keep = keep_mask(scores.detach(), k)
                u_rec = rec.base(s, xs, Carry(u_prev=None if prev is None else u_hard[:, prev], u_cache=u_cache))
                u_comp = torch.where(keep.unsqueeze(-1), u_hard[:, cur], u_dense[:, cur])
                top = scores.detach().topk(k + 1, dim=1).values
                thr = 0.5 * (top[:, k - 1] + top[:, k])
                spread = scores.detach().std(dim=1, keepdim=True).clamp_min(1e-6) * self.temperature
                p = torch.sigmoid((scores - thr.unsqueeze(1)) / spread)
                pieces.append(out[:, cur] + ((p - p.detach()).unsqueeze(-1) * (u_comp - u_rec)).to(out.dtype))
                if self.capture_gates:
                    self.gates.append((p, k / n))
            if s == rec.cache_scale:
                u_cache = u_hard[:, cur]
            prev = cur
        return torch.cat(pieces, dim=1)
