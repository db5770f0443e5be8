"""Class-conditional images sampled in memory, in batches, with a progress bar.

`sample_classes`: one image per label, batch i seeded `seed + i` (the evaluation protocol's loop).
`iter_images` / `generate_images`: the `generate` verb's rule: class c's images drawn in chunks of
`batch` (chunk k holds its images k*batch ... k*batch + batch - 1), each chunk in one call seeded with
`g_seed = numpy.random.SeedSequence([seed, c, k]).generate_state(1, numpy.uint64)[0]`.
An image therefore depends on the model, seed, batch, sampling settings and device, never on
which other classes are drawn or how many processes share the work: the torchrun `.npz` equals
the one-process one.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from ..metrics.imagenet_fid import to_uint8_nhwc
from ..streams import batch_seeds


@torch.no_grad()
def sample_classes(var, labels: torch.Tensor, seed: int = 0, cfg: float = 1.5, top_k: int = 0,
                   top_p: float = 0.0, batch: int = 50, progress: bool = False) -> torch.Tensor:
    """One image per label, in [0, 1]; batch i uses g_seed = seed + i, so runs are reproducible."""
    labels = torch.as_tensor(labels).long()
    out = []
    for i, g in tqdm(zip(range(0, len(labels), batch), batch_seeds(seed, len(labels), batch)), desc="sampling",
                     disable=not progress):
        lb = labels[i:i + batch].to(var.pos_1LC.device)
        out.append(var.autoregressive_infer_cfg(len(lb), lb, g_seed=g, cfg=cfg, top_k=top_k,
                                                top_p=top_p).cpu())
    return torch.cat(out) if out else torch.empty(0, 3, 0, 0)


def per_class_labels(num_classes: int, n_per_class: int) -> torch.Tensor:
    """0,0,...,1,1,...: grouped by class so a grid row shows one class."""
    return torch.arange(num_classes).repeat_interleave(n_per_class)


SEEDING = "g_seed = numpy.random.SeedSequence([seed, class, image_index // batch]).generate_state(1, numpy.uint64)[0]"


def chunk_seed(seed: int, cls: int, chunk: int) -> int:
    """Seed of chunk `chunk` of class `cls`: a 64-bit hash, so nearby seeds and classes get unrelated streams."""
    return int(np.random.SeedSequence([seed, cls, chunk]).generate_state(1, np.uint64)[0])


@torch.no_grad()
def iter_images(var, classes, n_per_class: int, *, seed: int = 0, cfg: float = 1.5, top_k: int = 0,
                top_p: float = 0.0, batch: int = 50, progress: bool = False):
    """Yield uint8 (b, H, W, 3) chunks, class by class, each drawn by the seeding rule."""
    dev = var.pos_1LC.device
    with tqdm(total=len(classes) * n_per_class, desc="sampling", unit="img", disable=not progress) as bar:
        for c in classes:
            for k, start in enumerate(range(0, n_per_class, batch)):
                b = min(batch, n_per_class - start)
                labels = torch.full((b,), int(c), device=dev)
                img = var.autoregressive_infer_cfg(b, labels, g_seed=chunk_seed(seed, c, k), cfg=cfg, top_k=top_k,
                                                   top_p=top_p)
                bar.update(b)
                yield to_uint8_nhwc(img)  # rounds like viz.grid_array: grid pixels equal the per-image PNGs


def generate_images(var, classes, n_per_class: int, **kw) -> np.ndarray:
    """n_per_class images of each class, grouped by class: uint8 (N, H, W, 3). See `iter_images`."""
    return np.concatenate(list(iter_images(var, classes, n_per_class, **kw)))
