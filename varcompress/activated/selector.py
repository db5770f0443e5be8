"""Gated token selector: which tokens of a scale a block computes.

Scores (higher = compute this token):
- "learned": a linear read-out of the normalised block input LN(x) (no affine),
  fitted by ridge regression to the log-norm of the error a skipped token would carry,
  ||(y - x) - base|| with `base` what the block's reconstruction gives it
  (`token_path.skip_bases`; = the update norm ||y - x|| for "identity"), on teacher
  tokens, with one free intercept per scale (only the ranking within a scale matters).
- "residual": ||x - up(x at the previous scale)||, parameter-free (what the coarser
  scale failed to explain).
- "mean_distance": ||x - mean of the scale's tokens||^2 per row, parameter-free
  (FastVAR's score: tokens far from the map's average carry the detail).
The top `k_s` tokens of each (row, scale) are kept (`token_path.keep_indices`); kept
indices stay in raster order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def upsample_tokens(t: torch.Tensor, pn_from: int, pn_to: int, mode: str) -> torch.Tensor:
    """(B, pn_from^2, C) token map -> (B, pn_to^2, C) by bilinear, nearest or area interpolation."""
    B, _, C = t.shape
    grid = t.transpose(1, 2).reshape(B, C, pn_from, pn_from)
    kw = {"align_corners": False} if mode == "bilinear" else {}
    up = F.interpolate(grid, size=(pn_to, pn_to), mode=mode, **kw)
    return up.reshape(B, C, pn_to * pn_to).transpose(1, 2)


class TokenSelector(nn.Module):
    def __init__(self, dim: int, kind: str = "learned", eps: float = 1e-6, upsample: str = "bilinear"):
        super().__init__()
        self.kind, self.eps, self.upsample, self.dim = kind, eps, upsample, dim
        if kind == "learned":
            self.score = nn.Linear(dim, 1)
        elif kind not in ("residual", "mean_distance"):
            raise ValueError(f"unknown selector {kind!r}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), eps=self.eps)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None, pn_prev: int, pn: int) -> torch.Tensor:
        """Scores (B, n) for the tokens x (B, n, C) of one scale; x_prev = the previous scale's map."""
        if self.kind == "learned":
            return self.score(self.features(x)).squeeze(-1)
        if self.kind == "mean_distance":
            return (x - x.mean(dim=1, keepdim=True)).pow(2).sum(dim=-1)
        if x_prev is None:
            return x.norm(dim=-1)
        return (x - upsample_tokens(x_prev, pn_prev, pn, self.upsample)).norm(dim=-1)

    def flops_per_token(self) -> float:
        """Per scored token: the read-out (learned), subtract/square/sum (residual), plus the mean (mean_distance)."""
        return {"learned": 2.0, "residual": 3.0, "mean_distance": 4.0}[self.kind] * self.dim


@torch.no_grad()
def fit_selector(sel: TokenSelector, x_in: torch.Tensor, skip_error: torch.Tensor, scale_id: torch.Tensor,
                 lam: float = 1e-2) -> dict[str, float]:
    """Ridge fit of `sel.score` to log||skip_error|| (per token: the update minus what the
    reconstruction would give it) with per-scale intercepts; returns within-scale R^2."""
    if sel.kind != "learned":
        return {}
    X = sel.features(x_in.float()).double()
    y = skip_error.float().norm(dim=-1).clamp_min(1e-8).log().double()
    # remove per-scale means: the per-scale intercepts, eliminated in closed form
    Xc, yc = X.clone(), y.clone()
    scale_id = scale_id.to(X.device)
    for s in scale_id.unique():
        m = scale_id == s
        Xc[m] -= X[m].mean(0)
        yc[m] -= y[m].mean()
    G = Xc.T @ Xc
    G += torch.eye(G.shape[0], dtype=G.dtype) * lam * G.diagonal().mean().clamp_min(1e-12)
    w = torch.linalg.solve(G, Xc.T @ yc)
    sel.score.weight.copy_(w.to(sel.score.weight.dtype)[None])
    sel.score.bias.zero_()
    r2 = 1 - (yc - Xc @ w).pow(2).mean() / yc.pow(2).mean().clamp_min(1e-12)
    return {"r2_within_scale": float(r2)}
