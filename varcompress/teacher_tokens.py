"""Token maps drawn by a teacher VAR: data for calibration, distillation and metrics.

No data set is needed: the teacher samples class-conditional images with its own
sampling settings, and we keep the multi-scale token indices and the teacher-forcing
input that rebuilds them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from .errors import VarcompressError
from .streams import batch_seeds


@dataclass
class TokenMaps:
    labels: torch.Tensor  # (N,)
    idx: torch.Tensor     # (N, L) token indices, all scales concatenated
    x: torch.Tensor       # (N, L - first_l, Cvae) teacher-forcing input

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, sl) -> "TokenMaps":
        return TokenMaps(self.labels[sl], self.idx[sl], self.x[sl])


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """0, 1, ..., C-1, 0, 1, ...: every class equally often (up to one)."""
    return torch.arange(n) % num_classes


@torch.no_grad()
def draw_token_maps(var, labels: torch.Tensor, seed: int = 0, cfg: float = 1.5, top_k: int = 0,
                    top_p: float = 0.0, batch: int = 32, progress: bool = False) -> TokenMaps:
    """Sample one image per label with the teacher; batch i uses g_seed = seed + i
    (`streams.batch_seeds`; pass a `streams.derive_seed` for the purpose)."""
    if var.vae is None:
        raise VarcompressError("drawing token maps needs the VQVAE: load_var(path, vae=...)")
    labels = torch.as_tensor(labels).long().cpu()
    idx_all, x_all = [], []
    for i, g in tqdm(zip(range(0, len(labels), batch), batch_seeds(seed, len(labels), batch)),
                     desc="teacher samples", disable=not progress):
        lb = labels[i:i + batch].to(var.pos_1LC.device)
        _, idx = var.autoregressive_infer_cfg(len(lb), lb, g_seed=g, cfg=cfg, top_k=top_k,
                                              top_p=top_p, return_idx=True)
        idx_all.append(torch.cat(idx, dim=1).cpu())
        x_all.append(var.vae.idxBl_to_var_input(idx).cpu())
    return TokenMaps(labels, torch.cat(idx_all), torch.cat(x_all))
