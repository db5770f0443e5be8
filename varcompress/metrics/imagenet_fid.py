"""The real FID / Inception Score path for ImageNet users, fully offline.

Samples are written as the `.npz` the common evaluators read (`arr_0`: uint8 NHWC).
Features come from torch-fidelity's InceptionV3 port ("inception-v3-compat", the
network FID is defined with) loaded from a LOCAL weights file; the reference is a
local `.npz` with `mu` and `sigma` (e.g. ADM's VIRTUAL_imagenet256_labeled.npz) or
with images under `arr_0`. Nothing is downloaded.
Install: `pip install torch-fidelity` (it needs torchvision).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import first_line
from ..durable import atomic_write
from ..errors import VarcompressError
from .frechet import feature_stats, frechet_distance


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> uint8 (N, H, W, 3), rounded like the ADM sampling scripts."""
    return (images.detach().float().clamp(0, 1).mul(255).add(0.5).clamp(0, 255)
            .to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())


def write_samples_npz(images_uint8_nhwc: np.ndarray, path: str | Path, labels=None, force: bool = False) -> Path:
    arrays = {"arr_0": images_uint8_nhwc}
    if labels is not None:
        arrays["arr_1"] = np.asarray(labels, dtype=np.int64)
    def write(tmp: str) -> None:  # a file object: np.savez would append ".npz" to a bare name
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write, force=force)


def load_inception(weights: str | Path, device: str = "cpu"):
    """torch-fidelity's FID InceptionV3 from a local weights file (2048-d pool + unbiased logits)."""
    weights = Path(weights)
    if not weights.is_file():
        raise VarcompressError(f"{weights}: Inception weights not found (pt_inception-2015-12-05 weights, a local file)")
    try:
        # lazy on purpose: torch-fidelity is the optional `fid` extra
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as e:
        raise VarcompressError(f"the ImageNet FID path needs torch-fidelity (pip install torch-fidelity): {e}") from None
    return FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                       feature_extractor_weights_path=str(weights)).eval().to(device)


@torch.no_grad()
def inception_features(extractor, images_uint8_nhwc: np.ndarray, batch: int = 100, device: str = "cpu"):
    pools, logits = [], []
    for i in range(0, len(images_uint8_nhwc), batch):
        x = torch.from_numpy(images_uint8_nhwc[i:i + batch]).permute(0, 3, 1, 2).contiguous().to(device)
        pool, logit = extractor(x)
        pools.append(pool.double().cpu())
        logits.append(logit.double().cpu())
    return torch.cat(pools), torch.cat(logits)


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))), mean and std over `splits` chunks (the usual protocol)."""
    p = logits.double().softmax(-1)
    scores = []
    for chunk in p.chunk(splits):
        py = chunk.mean(0, keepdim=True)
        scores.append(torch.exp((chunk * (chunk.log() - py.log())).sum(1).mean()).item())
    return float(np.mean(scores)), float(np.std(scores))


def reference_stats(ref_npz: str | Path, extractor=None) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from a reference .npz: precomputed `mu`/`sigma`, or images in `arr_0`."""
    try:
        with np.load(ref_npz) as ref:  # the archive is read lazily: every access inside the handler
            if "mu" in ref and "sigma" in ref:
                return ref["mu"].astype(np.float64), ref["sigma"].astype(np.float64)
            images = ref["arr_0"] if "arr_0" in ref and extractor is not None else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise VarcompressError(f"{ref_npz}: cannot read reference npz ({first_line(e)})") from None
    if images is None:
        raise VarcompressError(f"{ref_npz}: expected 'mu' and 'sigma' (or images in 'arr_0')")
    return feature_stats(inception_features(extractor, images)[0])


def check_samples_npz(path: str | Path) -> None:
    """A cheap look at the archive's directory: refuses a missing, truncated or non-npz file up front."""
    path = Path(path)
    if not path.exists():
        raise VarcompressError(f"{path}: no such file (expected an npz with uint8 images in 'arr_0')")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise VarcompressError(f"{path}: expected an npz with uint8 images in 'arr_0' (not a zip archive: {e})") \
            from None
    if "arr_0.npy" not in names:
        raise VarcompressError(f"{path}: expected an npz with uint8 images in 'arr_0' (it holds {names[:5]})")


def imagenet_fid(samples_npz: str | Path, ref_npz: str | Path, inception_weights: str | Path,
                 device: str = "cpu", extractor=None) -> dict:
    """FID against the reference and Inception Score of the samples in `samples_npz`."""
    check_samples_npz(samples_npz)
    try:
        with np.load(samples_npz) as z:
            images = z["arr_0"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise VarcompressError(f"{samples_npz}: expected an npz with uint8 images in 'arr_0' ({e})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise VarcompressError(f"{samples_npz}: arr_0 must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    extractor = extractor or load_inception(inception_weights, device)
    pool, logits = inception_features(extractor, images, device=device)
    mu_r, sigma_r = reference_stats(ref_npz, extractor)
    mu, sigma = feature_stats(pool)
    is_mean, is_std = inception_score(logits)
    return {"fid": frechet_distance(mu_r, sigma_r, mu, sigma), "inception_score": is_mean,
            "inception_score_std": is_std, "n": len(images)}
