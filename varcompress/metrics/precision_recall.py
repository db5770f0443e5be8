"""Improved precision and recall (Kynkaanniemi et al., 2019).

Each set's manifold is the union of balls around its samples, each ball's radius the
distance to that sample's k-th nearest neighbour within the same set. Precision is
the fraction of generated samples inside the real manifold (fidelity); recall is the
fraction of real samples inside the generated manifold (coverage). Distances come
from chunked `torch.cdist`, so memory stays O(chunk * N) rather than O(N^2).
"""
from __future__ import annotations

import torch

from ..errors import VarcompressError


def _as_feats(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if t.ndim != 2 or t.shape[0] == 0:
        raise VarcompressError(f"{name} must be a non-empty (N, D) array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise VarcompressError(f"{name} contains NaN or inf")
    return t


def knn_radii(feats: torch.Tensor, k: int = 3, chunk: int = 1024) -> torch.Tensor:
    """Distance from each sample to its k-th nearest *other* sample in the same set."""
    n = feats.shape[0]
    if not 1 <= k < n:
        raise VarcompressError(f"k must be in [1, {n - 1}] for {n} samples, got {k}")
    out = torch.empty(n, dtype=feats.dtype)
    for i in range(0, n, chunk):
        d = torch.cdist(feats[i:i + chunk], feats)
        out[i:i + chunk] = d.kthvalue(k + 1, dim=1).values  # +1: the sample itself (distance 0)
    return out


def _coverage(manifold: torch.Tensor, radii: torch.Tensor, queries: torch.Tensor, chunk: int) -> float:
    """Fraction of `queries` within radius of at least one manifold sample."""
    inside = 0
    for i in range(0, queries.shape[0], chunk):
        d = torch.cdist(queries[i:i + chunk], manifold)
        inside += int((d <= radii[None, :]).any(dim=1).sum())
    return inside / queries.shape[0]


def precision_recall(real, fake, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """(precision, recall) of `fake` (M,D) features against `real` (N,D) features."""
    real, fake = _as_feats(real, "real"), _as_feats(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise VarcompressError(f"feature sizes differ: real {real.shape[1]}, fake {fake.shape[1]}")
    precision = _coverage(real, knn_radii(real, k, chunk), fake, chunk)
    recall = _coverage(fake, knn_radii(fake, k, chunk), real, chunk)
    return precision, recall
