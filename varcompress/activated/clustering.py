"""Split an FFN's hidden neurons into E equal-size groups (experts).

- "kmeans": spherical k-means on the L2-normalised fc1 rows (each neuron's input
  weights), MoEfication-style; needs no data.
- "coact": k-means on each neuron's activation-magnitude profile over calibration
  tokens (|GELU(fc1 x)| per token, L2-normalised): neurons that fire together share
  an expert, so a token's mass concentrates in few experts.
- "random": a balanced random split (the baseline the others must beat).

k-means clusters are unbalanced; `balanced_assign` makes them equal-size with a
greedy capacity assignment (all (neuron, centre) pairs by increasing distance; a
neuron takes the nearest centre that still has room), alternated with centre updates.
"""
from __future__ import annotations

import numpy as np
import torch


def balanced_assign(feats: np.ndarray, centres: np.ndarray, cap: int) -> np.ndarray:
    """Label each row of `feats` with a centre, at most `cap` rows per centre (greedy by distance)."""
    n, E = feats.shape[0], centres.shape[0]
    d2 = (feats ** 2).sum(1, keepdims=True) - 2 * feats @ centres.T + (centres ** 2).sum(1)[None]
    order = np.argsort(d2, axis=None, kind="stable")
    labels = np.full(n, -1, dtype=np.int64)
    counts = np.zeros(E, dtype=np.int64)
    left = n
    for flat in order:
        i, e = divmod(int(flat), E)
        if labels[i] >= 0 or counts[e] >= cap:
            continue
        labels[i] = e
        counts[e] += 1
        left -= 1
        if left == 0:
            break
    return labels


def balanced_kmeans(feats: np.ndarray, E: int, seed: int, iters: int = 8) -> np.ndarray:
    """Equal-size clusters: sklearn KMeans init, then balanced assignment / centre update rounds."""
    from sklearn.cluster import KMeans  # lazy on purpose: sklearn (with scipy) takes ~1.5 s to import

    n = feats.shape[0]
    cap = n // E
    km = KMeans(n_clusters=E, n_init=3, random_state=seed, max_iter=100).fit(feats)
    centres = km.cluster_centers_.astype(np.float64)
    labels = balanced_assign(feats, centres, cap)
    for _ in range(iters):
        centres = np.stack([feats[labels == e].mean(0) for e in range(E)])
        new = balanced_assign(feats, centres, cap)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def _normalise(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def cluster_neurons(method: str, fc1_weight: torch.Tensor, E: int, seed: int = 0,
                    acts: torch.Tensor | None = None) -> torch.Tensor:
    """(E, hidden/E) neuron indices per expert, each row sorted.

    `acts` (T, hidden): post-GELU activations on calibration tokens (needed by "coact").
    """
    hidden = fc1_weight.shape[0]
    if hidden % E:
        raise ValueError(f"{E} experts do not divide {hidden} neurons")
    if method == "random":
        g = torch.Generator().manual_seed(seed)
        labels = (torch.randperm(hidden, generator=g) % E).numpy()
    elif method == "kmeans":
        labels = balanced_kmeans(_normalise(fc1_weight.detach().double().cpu().numpy()), E, seed)
    elif method == "coact":
        if acts is None:
            raise ValueError("coact clustering needs calibration activations")
        prof = acts.detach().abs().double().cpu().numpy().T  # (hidden, T)
        labels = balanced_kmeans(_normalise(prof), E, seed)
    else:
        raise ValueError(f"unknown clustering {method!r}")
    groups = [np.sort(np.nonzero(labels == e)[0]) for e in range(E)]
    return torch.as_tensor(np.stack(groups), dtype=torch.long)
