"""Class-conditional sampling in batches, with a progress bar: the common generation loop."""
from __future__ import annotations

import torch
from tqdm import tqdm

from .streams import batch_seeds


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
