"""scikit-learn's bundled 8x8 handwritten digits, upsampled to 32x32 grey-as-RGB.

The data ships inside scikit-learn (no download), so this is a real-image set that
works offline. Pixels 0..16 are scaled to [0,1], upsampled bicubically (smoother
strokes than bilinear at 4x) and clamped; the label is the digit itself. The
train/test split is a fixed 80/20 stratified split (seed 0) so every user of the
testbed trains and evaluates on the same images.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

CLASS_NAMES = tuple(str(d) for d in range(10))
SIZE = 32
SPLIT_SEED = 0
TEST_FRACTION = 0.2


@lru_cache(maxsize=1)
def _load_all() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as ((N,3,32,32) float32 in [0,1], (N,) int64), in sklearn order."""
    from sklearn.datasets import load_digits  # lazy on purpose: sklearn takes ~1.5 s to import

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
    return x.expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(d.target.astype(np.int64))


@lru_cache(maxsize=1)
def _split_indices() -> dict[str, np.ndarray]:
    """Fixed stratified 80/20 split of the indices (same for everyone, forever)."""
    from sklearn.model_selection import train_test_split  # lazy on purpose: as above

    y = _load_all()[1].numpy()
    tr, te = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return {"train": np.sort(tr), "test": np.sort(te)}


def load_digits_split(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """All images and labels of one split, in a fixed order (copies, safe to modify)."""
    x, y = _load_all()
    idx = torch.from_numpy(_split_indices()[split])
    return x[idx].clone(), y[idx].clone()
