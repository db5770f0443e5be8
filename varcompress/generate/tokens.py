"""Token maps drawn by a teacher VAR: data for calibration, distillation, metrics and the testbed report.

No data set is needed: the teacher samples class-conditional images with its own
sampling settings, and we keep the multi-scale token indices and the teacher-forcing
input that rebuilds them. `draw_token_maps` is the one function that draws them, on
either path: "eager" (the model's own `autoregressive_infer_cfg`, the reference) or
"engine" (`engine.Engine` in float32, no decoder pass). Batch i of a draw uses
g_seed = seed + i on both paths (`streams.batch_seeds`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from ..engine.engine import Engine
from ..errors import VarcompressError
from ..streams import batch_seeds

PATHS = ("eager", "engine")


@dataclass
class TokenMaps:
    labels: torch.Tensor  # (N,)
    idx: torch.Tensor     # (N, L) token indices, all scales concatenated
    x: torch.Tensor       # (N, L - first_l, Cvae) teacher-forcing input
    images: torch.Tensor | None = None  # (N, 3, H, W) in [0, 1], decoded from idx (decode=True)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, sl) -> "TokenMaps":
        return TokenMaps(self.labels[sl], self.idx[sl], self.x[sl], None if self.images is None else self.images[sl])


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """0, 1, ..., C-1, 0, 1, ...: every class equally often (up to one)."""
    return torch.arange(n) % num_classes


@torch.no_grad()
def draw_token_maps(var, labels: torch.Tensor, seed: int = 0, cfg: float = 1.5, top_k: int = 0,
                    top_p: float = 0.0, batch: int = 32, *, path: str = "eager", decode: bool = False,
                    progress: bool | None = False, desc: str = "teacher samples") -> TokenMaps:
    """One sample per label with the teacher, batch i with g_seed = seed + i (pass a `streams.derive_seed`
    for the purpose). Tensors come back on the CPU.

    `path`: "eager" or "engine" (see the module doc); `decode`: also the images, decoded from the
    drawn tokens by the VQVAE (`TokenMaps.images`). `progress`: a bar counting tokens (None: only
    where stderr is a terminal).
    """
    if path not in PATHS:
        raise VarcompressError(f"token maps: path must be one of {', '.join(PATHS)}, got {path!r}")
    if var.vae is None:
        raise VarcompressError("drawing token maps needs the VQVAE: load_var(path, vae=...)")
    labels = torch.as_tensor(labels).long().cpu()
    dev = var.pos_1LC.device
    eng = Engine(var, dtype=torch.float32, device=dev) if path == "engine" else None
    idx_all, x_all, images = [], [], []
    disable = None if progress is None else not progress
    with tqdm(total=len(labels) * var.L, desc=desc, unit="tok", disable=disable) as bar:
        for i, g in zip(range(0, len(labels), batch), batch_seeds(seed, len(labels), batch)):
            lb = labels[i:i + batch].to(dev)
            kw = dict(g_seed=g, cfg=cfg, top_k=top_k, top_p=top_p, return_idx=True)
            if eng is None:
                _, idx = var.autoregressive_infer_cfg(len(lb), lb, **kw)
                bar.update(len(lb) * var.L)
            else:
                _, idx = eng.generate(len(lb), lb, **kw, decode=False,
                                      logits_hook=lambda si, logits: bar.update(logits.shape[0] * logits.shape[1]))
            idx_all.append(torch.cat(idx, dim=1).cpu())
            x_all.append(var.vae.idxBl_to_var_input(idx).cpu())
            if decode:
                images.append(((var.vae.idxBl_to_img(idx, last_one=True) + 1) / 2).cpu())
    return TokenMaps(labels, torch.cat(idx_all), torch.cat(x_all), torch.cat(images) if decode else None)
