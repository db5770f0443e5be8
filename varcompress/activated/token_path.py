"""The token path of a gated block, in one place: which tokens of a scale are computed, and
what the skipped ones get.

Used by teacher forcing and cached generation (`GatedBlock`), the engine's cached generation
(`engine.runners.GatedRunner`), the selector relaxation (`distill.relax`) and the selector
loss (`distill.losses`). Pure functions; keep counts are passed in per call.

- `scale_spans(patch_nums, a, b)`: (scale, row offset, rows) of each scale in rows covering a..b-1.
- `scale_scores`: the selector's scores of one scale, given the previous scale's input map.
- `keep_indices` / `keep_mask`: each row's top `k` tokens (indices ascending = raster order).
- `select_scales`: kept indices of every scale of a call (all indices where k >= n).
- `gather_tokens`, `flat_positions`, `gather_bias`: the kept rows of x and of the attention mask.
- `Reconstruction`: the update a skipped token gets, by a strategy named in the config
  (`RECONSTRUCTIONS`: "identity" = zero, x passes through; "prev_scale" = the block's update
  map at the previous scale, upsampled; "cached" = FastVAR's restoration, the update map at
  the fixed earlier scale `cache_scale`, upsampled, zero at scales not after it). A strategy
  reads the maps carried from earlier scales (`Carry`) and says which maps must be kept.
- `merge_scale`: kept rows = the computed output, skipped rows = x + reconstructed update.
- `reconstruct_scales`: `merge_scale` over every scale of a call, threading the `Carry`.
- `skip_bases`: the update every token would get if skipped, given the true update maps;
  the cost of skipping a token is ||u - base|| (the selector's fitting target).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .selector import upsample_tokens


class Carry(NamedTuple):
    """Maps carried from earlier scales (B, n_s, C); None where not known."""
    x_prev: torch.Tensor | None = None   # block input at the previous scale (residual selector)
    u_prev: torch.Tensor | None = None   # block update (output - input) at the previous scale
    u_cache: torch.Tensor | None = None  # block update at the reconstruction's `cache_scale`


def scale_spans(patch_nums, a: int, b: int) -> list[tuple[int, int, int]]:
    """(scale, row offset, rows) of scales a..b-1 laid out one after another."""
    spans, off = [], 0
    for s in range(a, b):
        n = patch_nums[s] ** 2
        spans.append((s, off, n))
        off += n
    return spans


# ---- selection ----------------------------------------------------------------------------------
def scale_scores(selector, x_s: torch.Tensor, x_prev: torch.Tensor | None, patch_nums, s: int) -> torch.Tensor:
    """Selector scores (B, n) of scale s's tokens x_s (B, n, C); x_prev = scale s-1's input map."""
    return selector(x_s, x_prev if s > 0 else None, patch_nums[s - 1] if s > 0 else 0, patch_nums[s])


def keep_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k) indices of each row's top-k scores, ascending (raster order)."""
    return scores.topk(k, dim=1).indices.sort(dim=1).values


def keep_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B, n) bool: each row's top-k tokens."""
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, keep_indices(scores, k), True)


def select_scales(selector, x: torch.Tensor, patch_nums, a: int, b: int, keep_counts,
                  x_prev: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Kept indices (B, k_s) per scale of rows x covering scales a..b-1 (`keep_counts` indexed by scale);
    x_prev = scale a-1's input map (cached generation)."""
    B, kept = x.shape[0], []
    for s, off, n in scale_spans(patch_nums, a, b):
        xs, k = x[:, off:off + n], keep_counts[s]
        if k >= n:
            kept.append(torch.arange(n, device=x.device).expand(B, n))
        else:
            kept.append(keep_indices(scale_scores(selector, xs, x_prev, patch_nums, s), k))
        x_prev = xs
    return kept


# ---- gather -------------------------------------------------------------------------------------
def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows idx (B, K) of x (B, L, C) -> (B, K, C)."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))


def flat_positions(kept: list[torch.Tensor], spans) -> torch.Tensor:
    """Per-scale kept indices -> (B, K) positions in the rows of the whole call."""
    return torch.cat([idx + off for idx, (_, off, _) in zip(kept, spans)], dim=1)


def gather_bias_rows(attn_bias: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """(1|B, 1, L, L) additive mask -> (B, 1, K, L): the kept queries `pos` (B, K) over every key."""
    B, K = pos.shape
    bb = attn_bias[:, 0].expand(B, -1, -1)
    return bb.gather(1, pos.unsqueeze(-1).expand(-1, -1, bb.shape[2])).unsqueeze(1)


def gather_bias(attn_bias: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """(1|B, 1, L, L) additive mask -> (B, 1, K, K) restricted to the kept rows `pos` (B, K)."""
    K = pos.shape[1]
    rows = gather_bias_rows(attn_bias, pos)[:, 0]
    return rows.gather(2, pos.unsqueeze(1).expand(-1, K, -1)).unsqueeze(1)


# ---- reconstruction -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Reconstruction:
    """What skipped tokens get: `kind` names a strategy of `RECONSTRUCTIONS` (a config value)."""
    kind: str
    patch_nums: tuple[int, ...]
    upsample: str = "bilinear"
    cache_scale: int = 0

    def __post_init__(self) -> None:
        if self.kind not in RECONSTRUCTIONS:
            raise ValueError(f"unknown reconstruction {self.kind!r} (one of {', '.join(RECONSTRUCTIONS)})")
        object.__setattr__(self, "patch_nums", tuple(self.patch_nums))

    def base(self, s: int, x_s: torch.Tensor, carry: Carry) -> torch.Tensor:
        """The reconstructed update (B, n, C) of scale s's tokens (a fresh tensor)."""
        u = RECONSTRUCTIONS[self.kind].update(self, s, carry)
        return torch.zeros_like(x_s) if u is None else u

    def keeps_update(self, s: int, sparse: list[bool]) -> bool:
        """Is scale s's update map read later (`sparse[t]`: scale t skips tokens)?"""
        return RECONSTRUCTIONS[self.kind].keeps(self, s, sparse)

    def up(self, u: torch.Tensor, s_from: int, s_to: int) -> torch.Tensor:
        return upsample_tokens(u, self.patch_nums[s_from], self.patch_nums[s_to], self.upsample)


class Strategy(NamedTuple):
    update: Callable[[Reconstruction, int, Carry], torch.Tensor | None]  # None: zero update
    keeps: Callable[[Reconstruction, int, list[bool]], bool]             # is scale s's update read later


def _prev_scale(r: Reconstruction, s: int, c: Carry) -> torch.Tensor | None:
    return r.up(c.u_prev, s - 1, s) if s > 0 and c.u_prev is not None else None


def _cached(r: Reconstruction, s: int, c: Carry) -> torch.Tensor | None:
    return r.up(c.u_cache, r.cache_scale, s) if s > r.cache_scale and c.u_cache is not None else None


RECONSTRUCTIONS: dict[str, Strategy] = {
    "identity": Strategy(lambda r, s, c: None, lambda r, s, sparse: False),
    "prev_scale": Strategy(_prev_scale, lambda r, s, sparse: s + 1 < len(sparse) and sparse[s + 1]),
    "cached": Strategy(_cached, lambda r, s, sparse: s == r.cache_scale and any(sparse[s + 1:])),
}


def merge_scale(x_s: torch.Tensor, xk: torch.Tensor, yk: torch.Tensor, idx: torch.Tensor, base: torch.Tensor,
                inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale output and update map: kept rows idx = yk; skipped rows = x + base (base is consumed
    when `inplace`). Every row kept: (yk, yk - x)."""
    if idx.shape[1] == x_s.shape[1]:
        return yk, yk - x_s
    ie = idx.unsqueeze(-1).expand(-1, -1, x_s.shape[2])
    if inplace:
        u = base.scatter_(1, ie, yk - xk)
        return (x_s + u).scatter_(1, ie, yk), u
    u = base.scatter(1, ie, yk - xk)
    return (x_s + u).scatter(1, ie, yk), u


def reconstruct_scales(rec: Reconstruction, x: torch.Tensor, xk: torch.Tensor, yk: torch.Tensor,
                       kept: list[torch.Tensor], a: int, carry: Carry) -> tuple[torch.Tensor, Carry]:
    """Full output of a call over scales a.. (kept rows of all scales in xk / yk, in order) and the
    carry after its last scale."""
    outs, ko = [], 0
    for idx, (s, off, n) in zip(kept, scale_spans(rec.patch_nums, a, a + len(kept))):
        k, xs = idx.shape[1], x[:, off:off + n]
        base = None if k == n else rec.base(s, xs, carry)
        ys, u = merge_scale(xs, xk[:, ko:ko + k], yk[:, ko:ko + k], idx, base)
        outs.append(ys)
        carry = Carry(xs, u, u if s == rec.cache_scale else carry.u_cache)
        ko += k
    return torch.cat(outs, dim=1), carry


def skip_bases(rec: Reconstruction, u: torch.Tensor) -> torch.Tensor:
    """(B, L, C): the reconstructed update of every token of all scales if it alone were skipped,
    the reconstruction reading the true update maps u (B, L, C) of the earlier scales."""
    out, carry = [], Carry()
    for s, off, n in scale_spans(rec.patch_nums, 0, len(rec.patch_nums)):
        us = u[:, off:off + n]
        out.append(rec.base(s, us, carry))
        carry = Carry(None, us, us if s == rec.cache_scale else carry.u_cache)
    return torch.cat(out, dim=1)
