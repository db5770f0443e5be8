"""Frechet distance between two Gaussians, the core of FID, computed stably.

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

tr((S1 S2)^(1/2)) equals the sum of square roots of the eigenvalues of the symmetric
PSD matrix A = S1^(1/2) S2 S1^(1/2) (same spectrum as S1 S2). Working with `eigh` on
symmetric matrices in float64 avoids the complex outputs and failures that
`scipy.linalg.sqrtm(S1 @ S2)` shows on near-singular covariances (few samples).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import VarcompressError


def _as_array(x, name: str, ndim: int) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    a = np.atleast_1d(a) if ndim == 1 else (a.reshape(1, 1) if a.ndim == 0 else a)
    if a.ndim != ndim:
        raise VarcompressError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise VarcompressError(f"{name} contains NaN or inf")
    return a


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a (numerically) PSD matrix; tiny negative eigenvalues -> 0."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (>= 0)."""
    mu1, mu2 = _as_array(mu1, "mu1", 1), _as_array(mu2, "mu2", 1)
    s1, s2 = _as_array(sigma1, "sigma1", 2), _as_array(sigma2, "sigma2", 2)
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise VarcompressError(
            f"shape mismatch: mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, sigma2 {s2.shape}")
    r1 = _sqrt_psd(s1)
    a = r1 @ s2 @ r1
    eig = np.linalg.eigvalsh((a + a.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
    return float(max(value, 0.0))


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D,D) of features (N,D), in float64."""
    f = _as_array(feats, "feats", 2)
    if f.shape[0] < 2:
        raise VarcompressError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])
