"""GatedBlock: runs the (fx-rewritten) inner block only on the selected tokens of each scale.

Rules (identical in teacher forcing and cached generation):
- At scale s each row keeps its top `keep_counts[s]` tokens by selector score (all of
  them when the count is the full scale); kept tokens go through attention and FFN.
- Skipped tokens do not write K/V in this block: queries attend only to computed
  tokens (of this and earlier scales). Teacher forcing gathers the kept rows of all
  scales and the block-causal mask per row to (B, 1, K, K); cached generation gathers
  per scale and the attention cache holds only kept tokens.
- Skipped tokens get a reconstructed update: "identity" (zero: x passes through),
  "prev_scale" (the block's full update map at the previous scale, upsampled) or
  "cached" (FastVAR's restoration: the block's update map at the fixed earlier scale
  `cache_scale`, upsampled; zero at scales not after it). Kept tokens get exactly the
  inner block's output.
While caching, the block keeps the previous scale's input and update maps (and the
cache scale's update map) as state; `kv_caching` resets it with the attention caches.
"""
from __future__ import annotations

import torch
from torch import nn

from ..flops import ScaleWork
from .experts import ExpertFFN
from .selector import TokenSelector, upsample_tokens


def gather_bias(attn_bias: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """(1|B, 1, L, L) additive mask -> (B, 1, K, K) restricted to the kept rows `pos` (B, K)."""
    B, K = pos.shape
    bb = attn_bias[:, 0].expand(B, -1, -1)
    rows = bb.gather(1, pos.unsqueeze(-1).expand(-1, -1, bb.shape[2]))
    return rows.gather(2, pos.unsqueeze(1).expand(-1, K, -1)).unsqueeze(1)


class GatedBlock(nn.Module):
    def __init__(self, inner: nn.Module, selector: TokenSelector, patch_nums, keep_counts: list[int],
                 reconstruction: str = "prev_scale", upsample: str = "bilinear", expert_scales: int | None = None,
                 cache_scale: int = 0):
        super().__init__()
        S = len(patch_nums)
        # FFN experts are routed on the last `expert_scales` scales; earlier scales run the dense FFN
        self.first_routed_scale = 0 if expert_scales is None else max(0, S - expert_scales)
        self.inner, self.selector = inner, selector
        self.patch_nums = tuple(patch_nums)
        self.keep_counts = list(keep_counts)
        self.reconstruction, self.upsample, self.cache_scale = reconstruction, upsample, int(cache_scale)
        self._caching = False
        self._cached_u: torch.Tensor | None = None  # update map at cache_scale (reconstruction "cached")
        self._state: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (scale, x map, update map)
        self.recorder: list | None = None  # set to a list to record executed (scale, ScaleWork)

    def expert_ffns(self) -> list[ExpertFFN]:
        return [m for m in self.inner.modules() if isinstance(m, ExpertFFN)]

    def kv_caching(self, enable: bool) -> None:
        self._caching, self._state, self._cached_u = enable, None, None
        for m in self.inner.modules():
            if m is not self and callable(getattr(m, "kv_caching", None)):
                m.kv_caching(enable)

    # ---- FLOPs model -----------------------------------------------------------------------
    def scale_work(self, s: int, measured: bool = False) -> ScaleWork:
        n, k = self.patch_nums[s] ** 2, self.keep_counts[s]
        ffns, routed = self.expert_ffns(), s >= self.first_routed_scale
        if routed:
            hidden = sum((m.last_active * m.h) if measured else m.active_hidden() for m in ffns)
        else:
            hidden = sum(m.E * m.h for m in ffns)
        return ScaleWork(tokens=k, keys=sum(self.keep_counts[:s + 1]), ffn_hidden=hidden,
                         router_flops=sum(m.router_flops() for m in ffns) if routed else 0.0,
                         selector_flops=n * self.selector.flops_per_token() if k < n else 0.0)

    def _record(self, a: int, b: int) -> None:
        if self.recorder is not None:
            self.recorder.extend((s, self.scale_work(s, measured=True)) for s in range(a, b))

    # ---- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor, attn_bias: torch.Tensor | None,
                scales: tuple[int, int] | None = None) -> torch.Tensor:
        a, b = scales if scales is not None else (0, len(self.patch_nums))
        pns = self.patch_nums
        sizes = [pns[s] ** 2 for s in range(a, b)]
        if x.shape[1] != sum(sizes):
            raise ValueError(f"GatedBlock: {x.shape[1]} rows do not match scales {a}..{b - 1}")
        state = self._state if self._caching and a > 0 and self._state and self._state[0] == a - 1 else None
        if all(self.keep_counts[s] >= pns[s] ** 2 for s in range(a, b)):
            self._set_routing(a, b, None, sizes, x)
            try:
                y = self.inner(x, cond_BD, attn_bias)
            finally:
                self._set_routing(0, 0, None, [], x, clear=True)
            if self._caching:
                xl = x[:, -sizes[-1]:]
                self._state = (b - 1, xl, y[:, -sizes[-1]:] - xl)
                if a <= self.cache_scale < b:
                    o = sum(sizes[:self.cache_scale - a])
                    n = sizes[self.cache_scale - a]
                    self._cached_u = y[:, o:o + n] - x[:, o:o + n]
            self._record(a, b)
            return y
        kept = self._select(x, a, b, sizes, state)
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        pos = torch.cat([idx + o for idx, o in zip(kept, offsets)], dim=1)
        xk = x.gather(1, pos.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        self._set_routing(a, b, kept, sizes, x)
        try:
            yk = self.inner(xk, cond_BD, None if attn_bias is None else gather_bias(attn_bias, pos))
        finally:
            self._set_routing(0, 0, None, [], x, clear=True)
        self._record(a, b)
        return self._reconstruct(x, xk, yk, kept, a, b, sizes, state)

    def _set_routing(self, a, b, kept, sizes, x, clear: bool = False) -> None:
        """Tell the expert FFNs which of this call's rows are routed (scale >= first_routed_scale)."""
        f = self.first_routed_scale
        if clear:
            flag = None
        elif a >= f or b <= f:
            flag = a >= f
        else:
            counts = [idx.shape[1] for idx in kept] if kept is not None else sizes
            flag = torch.cat([torch.full((c,), s >= f, device=x.device) for s, c in zip(range(a, b), counts)])
            flag = flag.expand(x.shape[0], -1).reshape(-1)
        for m in self.expert_ffns():
            m.token_routed = flag

    def _select(self, x, a, b, sizes, state) -> list[torch.Tensor]:
        """Kept indices (B, k_s) per scale, each ascending."""
        B, kept, off = x.shape[0], [], 0
        x_prev = state[1] if state is not None else None
        for i, s in enumerate(range(a, b)):
            n, k = sizes[i], self.keep_counts[s]
            xs = x[:, off:off + n]
            if k >= n:
                kept.append(torch.arange(n, device=x.device).expand(B, n))
            else:
                pn_prev = self.patch_nums[s - 1] if s > 0 else 0
                kept.append(self.selector.select(self.selector(xs, x_prev if s > 0 else None, pn_prev, self.patch_nums[s]), k))
            x_prev, off = xs, off + n
        return kept

    def _reconstruct(self, x, xk, yk, kept, a, b, sizes, state) -> torch.Tensor:
        """Full output: kept rows = inner output; skipped rows = x + reconstructed update."""
        C, outs, off, ko = x.shape[2], [], 0, 0
        u_prev = state[2] if state is not None else None
        u_cache = self._cached_u if self._caching else None
        xs = u = None
        for i, s in enumerate(range(a, b)):
            n, idx = sizes[i], kept[i]
            k = idx.shape[1]
            xs, yks = x[:, off:off + n], yk[:, ko:ko + k]
            if k == n:
                ys, u = yks, yks - xs
            else:
                if self.reconstruction == "prev_scale" and u_prev is not None and s > 0:
                    u = upsample_tokens(u_prev, self.patch_nums[s - 1], self.patch_nums[s], self.upsample)
                elif self.reconstruction == "cached" and u_cache is not None and s > self.cache_scale:
                    u = upsample_tokens(u_cache, self.patch_nums[self.cache_scale], self.patch_nums[s], self.upsample)
                else:
                    u = torch.zeros_like(xs)
                ie = idx.unsqueeze(-1).expand(-1, -1, C)
                u = u.scatter(1, ie, yks - xk[:, ko:ko + k])
                ys = (xs + u).scatter(1, ie, yks)
            outs.append(ys)
            if s == self.cache_scale:
                u_cache = u
            u_prev, off, ko = u, off + n, ko + k
        if self._caching:
            self._state = (b - 1, xs, u)
            self._cached_u = u_cache
        return torch.cat(outs, dim=1)

    def extra_repr(self) -> str:
        return (f"keep_counts={self.keep_counts}, reconstruction={self.reconstruction}, upsample={self.upsample}, "
                f"cache_scale={self.cache_scale}, "
                f"first_routed_scale={self.first_routed_scale}")
