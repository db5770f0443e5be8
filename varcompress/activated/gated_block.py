"""GatedBlock: runs the (fx-rewritten) inner block only on the selected tokens of each scale.

Rules (identical in teacher forcing and cached generation; the mechanism is `token_path`,
shared with the engine and distillation):
- At scale s each row keeps its top `keep_counts[s]` tokens by selector score (all of
  them when the count is the full scale); kept tokens go through attention and FFN.
- Skipped tokens do not write K/V in this block: queries attend only to computed
  tokens (of this and earlier scales). Teacher forcing gathers the kept rows of all
  scales and the block-causal mask per row to (B, 1, K, K); cached generation gathers
  per scale and the attention cache holds only kept tokens.
- Skipped tokens get a reconstructed update (`token_path.Reconstruction`, the strategy
  named by `reconstruction`): "identity" (zero: x passes through), "prev_scale" (the
  block's full update map at the previous scale, upsampled) or "cached" (FastVAR's
  restoration: the block's update map at the fixed earlier scale `cache_scale`, upsampled;
  zero at scales not after it). Kept tokens get exactly the inner block's output.
- The expert FFNs get an `ExpertCall` per call (rows of scales >= `first_routed_scale`
  are routed; `expert_dispatch` picks the eager dispatch) through the inner graph's
  `expert_plan` input, and report their active experts back in it.
While caching, the block keeps the `Carry` after its last scale (input and update maps,
and the cache scale's update map); `kv_caching` resets it with the attention caches.
"""
from __future__ import annotations

import torch
from torch import nn

from ..flops import ScaleWork
from .experts import ExpertCall, ExpertFFN
from .selector import TokenSelector
from .token_path import (Carry, Reconstruction, flat_positions, gather_bias, gather_bias_rows, gather_tokens,
                         reconstruct_scales, scale_spans, select_scales)

PLAN_ARG = "expert_plan"  # the inner graph's input carrying the per-call ExpertCall (fx_pass.rewrite_block)
KV_ARG = "kv_rows"  # the inner graph's input whose rows give the attention's K/V (fx_pass.split_attention_rows)


class GatedBlock(nn.Module):
    def __init__(self, inner: nn.Module, selector: TokenSelector, rec: Reconstruction, keep_counts: list[int],
                 expert_scales: int | None = None, skipped_kv: str = "none"):
        super().__init__()
        S = len(rec.patch_nums)
        # FFN experts are routed on the last `expert_scales` scales; earlier scales run the dense FFN
        self.first_routed_scale = 0 if expert_scales is None else max(0, S - expert_scales)
        self.inner, self.selector = inner, selector
        self.patch_nums = tuple(rec.patch_nums)
        self.keep_counts = list(keep_counts)
        self.rec = rec
        self.skipped_kv = skipped_kv  # "computed": `inner` takes KV_ARG and every token writes K/V
        self._caching = False
        self._carry, self._carry_scale = Carry(), -1  # maps after the last cached scale call
        self.recorder: list | None = None  # set to a list to record executed (scale, ScaleWork)

    @property
    def reconstruction(self) -> str:
        return self.rec.kind

    @property
    def upsample(self) -> str:
        return self.rec.upsample

    @property
    def cache_scale(self) -> int:
        return self.rec.cache_scale

    @property
    def caching(self) -> bool:
        return self._caching

    def expert_ffns(self) -> list[ExpertFFN]:
        return [m for m in self.inner.modules() if isinstance(m, ExpertFFN)]

    def kv_caching(self, enable: bool) -> None:
        self._caching, self._carry, self._carry_scale = enable, Carry(), -1
        for m in self.inner.modules():
            if m is not self and callable(getattr(m, "kv_caching", None)):
                m.kv_caching(enable)

    # ---- FLOPs model -----------------------------------------------------------------------
    def scale_work(self, s: int, active: dict | None = None) -> ScaleWork:
        """Work of scale s: static, or as executed given the FFNs' reported `ExpertCall.active`."""
        n, k = self.patch_nums[s] ** 2, self.keep_counts[s]
        ffns, routed = self.expert_ffns(), s >= self.first_routed_scale
        if routed:
            hidden = sum((active.get(m, float(m.E)) * m.h) if active is not None else m.active_hidden() for m in ffns)
        else:
            hidden = sum(m.E * m.h for m in ffns)
        kv_all = self.skipped_kv == "computed"
        keys = sum(p * p for p in self.patch_nums[:s + 1]) if kv_all else sum(self.keep_counts[:s + 1])
        return ScaleWork(tokens=k, keys=keys, ffn_hidden=hidden,
                         router_flops=sum(m.router_flops() for m in ffns) if routed else 0.0,
                         selector_flops=n * self.selector.flops_per_token() if k < n else 0.0,
                         kv_tokens=max(0, n - k) if kv_all else 0)

    def _record(self, a: int, b: int, plan: ExpertCall) -> None:
        if self.recorder is not None:
            self.recorder.extend((s, self.scale_work(s, plan.active)) for s in range(a, b))

    # ---- forward ---------------------------------------------------------------------------
    def _spans(self, x: torch.Tensor, scales: tuple[int, int] | None):
        a, b = scales if scales is not None else (0, len(self.patch_nums))
        spans = scale_spans(self.patch_nums, a, b)
        if x.shape[1] != sum(n for _, _, n in spans):
            raise ValueError(f"GatedBlock: {x.shape[1]} rows do not match scales {a}..{b - 1}")
        return a, b, spans

    def expert_call(self, a: int, counts: list[int], batch: int, device, dispatch: str = "loop") -> ExpertCall:
        """The FFNs' plan for rows of scales a.. (`counts[i]` rows of scale a+i per sample): rows of
        scales >= first_routed_scale are routed."""
        f, b = self.first_routed_scale, a + len(counts)
        if a >= f or b <= f:
            return ExpertCall(routed=a >= f, dispatch=dispatch)
        flag = torch.cat([torch.full((c,), s >= f, device=device) for s, c in zip(range(a, b), counts)])
        return ExpertCall(routed=flag.expand(batch, -1).reshape(-1), dispatch=dispatch)

    def run_all(self, x: torch.Tensor, cond_BD: torch.Tensor, attn_bias: torch.Tensor | None,
                scales: tuple[int, int] | None = None, expert_dispatch: str = "loop") -> torch.Tensor:
        """The inner block on every row of the call (what each token gets when computed), no state."""
        a, _, spans = self._spans(x, scales)
        plan = self.expert_call(a, [n for _, _, n in spans], x.shape[0], x.device, expert_dispatch)
        return self.inner(x, cond_BD, attn_bias, **{PLAN_ARG: plan}, **self._kv(x))

    def _kv(self, x: torch.Tensor) -> dict:
        """The inner graph's K/V rows: every token of the call when skipped tokens write K/V."""
        return {KV_ARG: x} if self.skipped_kv == "computed" else {}

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor, attn_bias: torch.Tensor | None,
                scales: tuple[int, int] | None = None, expert_dispatch: str = "loop") -> torch.Tensor:
        a, b, spans = self._spans(x, scales)
        carry = Carry()
        if self._caching:  # the previous scale's maps only when this call continues it
            c = self._carry
            carry = c if a > 0 and self._carry_scale == a - 1 else Carry(u_cache=c.u_cache)
        if all(self.keep_counts[s] >= n for s, _, n in spans):
            plan = self.expert_call(a, [n for _, _, n in spans], x.shape[0], x.device, expert_dispatch)
            y = self.inner(x, cond_BD, attn_bias, **{PLAN_ARG: plan}, **self._kv(x))
            if self._caching:
                _, off, n = spans[-1]
                xl, u_cache = x[:, off:off + n], carry.u_cache
                for s, o, m in spans:
                    if s == self.cache_scale:
                        u_cache = y[:, o:o + m] - x[:, o:o + m]
                self._carry, self._carry_scale = Carry(xl, y[:, off:off + n] - xl, u_cache), b - 1
            self._record(a, b, plan)
            return y
        kept = select_scales(self.selector, x, self.patch_nums, a, b, self.keep_counts, carry.x_prev)
        pos = flat_positions(kept, spans)
        xk = gather_tokens(x, pos)
        plan = self.expert_call(a, [idx.shape[1] for idx in kept], x.shape[0], x.device, expert_dispatch)
        kv = self._kv(x)
        bias = None if attn_bias is None else gather_bias_rows(attn_bias, pos) if kv else gather_bias(attn_bias, pos)
        yk = self.inner(xk, cond_BD, bias, **{PLAN_ARG: plan}, **kv)
        self._record(a, b, plan)
        y, carry = reconstruct_scales(self.rec, x, xk, yk, kept, a, carry)
        if self._caching:
            self._carry, self._carry_scale = carry, b - 1
        return y

    def extra_repr(self) -> str:
        return (f"keep_counts={self.keep_counts}, reconstruction={self.reconstruction}, upsample={self.upsample}, "
                f"cache_scale={self.cache_scale}, skipped_kv={self.skipped_kv}, "
                f"first_routed_scale={self.first_routed_scale}")
