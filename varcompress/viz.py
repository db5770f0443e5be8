"""PNG image grids, written atomically (people would rather look than read)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .durable import atomic_write


def grid_array(images: torch.Tensor, nrow: int, pad: int = 2, upscale: int = 1) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> one uint8 (rows*H', nrow*W', 3) array, white padding."""
    images = images.detach().float().clamp(0, 1).cpu()
    if upscale > 1:
        images = images.repeat_interleave(upscale, -2).repeat_interleave(upscale, -1)
    N, _, H, W = images.shape
    rows = (N + nrow - 1) // nrow
    out = np.full((rows * (H + pad) + pad, nrow * (W + pad) + pad, 3), 255, np.uint8)
    arr = (images.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    for i in range(N):
        r, c = divmod(i, nrow)
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        out[y:y + H, x:x + W] = arr[i]
    return out


def save_grid(images: torch.Tensor, path: str | Path, nrow: int, upscale: int = 1, force: bool = True) -> Path:
    """Write a PNG grid atomically; row r holds images r*nrow ... r*nrow + nrow - 1."""
    img = Image.fromarray(grid_array(images, nrow, upscale=upscale))
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"), force=force)


def concat_grids_side_by_side(arrays: list[np.ndarray], gap: int = 8) -> np.ndarray:
    """Put grids (same height) next to each other: a column per method."""
    h = max(a.shape[0] for a in arrays)
    parts = []
    for a in arrays:
        pad = np.full((h, a.shape[1] + gap, 3), 255, np.uint8)
        pad[:a.shape[0], :a.shape[1]] = a
        parts.append(pad)
    return np.concatenate(parts, axis=1)
