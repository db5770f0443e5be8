"""Metrics of a student against its teacher that need no data set and no classifier.

They work on any checkpoint, official ones included:
- teacher-forced KL(teacher || student) and top-1 agreement, per scale, on token maps
  the teacher drew itself;
- same seed and class: per-scale token agreement and PSNR of the generated images.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..generate.tokens import TokenMaps
from ..streams import batch_seeds
from .kl import log_probs, token_kl


@torch.no_grad()
def teacher_forced_agreement(student, teacher, maps: TokenMaps, batch: int = 32) -> dict:
    """Mean KL(teacher || student) (nats/token) and argmax agreement, overall and per scale."""
    S = len(teacher.patch_nums)
    kl_sum, agree_sum, count = torch.zeros(S), torch.zeros(S), torch.zeros(S)
    for i in range(0, len(maps), batch):
        lb, x = maps.labels[i:i + batch], maps.x[i:i + batch]
        lt, ls = log_probs(teacher(lb, x)), log_probs(student(lb, x))
        kl = token_kl(lt, ls)            # (B, L)
        agree = (lt.argmax(-1) == ls.argmax(-1)).float()
        for s, (bg, ed) in enumerate(teacher.begin_ends):
            kl_sum[s] += kl[:, bg:ed].sum()
            agree_sum[s] += agree[:, bg:ed].sum()
            count[s] += kl[:, bg:ed].numel()
    return {"kl": (kl_sum.sum() / count.sum()).item(), "top1_agreement": (agree_sum.sum() / count.sum()).item(),
            "kl_per_scale": (kl_sum / count).tolist(), "top1_per_scale": (agree_sum / count).tolist()}


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of images in [0, 1]; identical images give +inf."""
    mse = F.mse_loss(a.float(), b.float(), reduction="none").flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


@torch.no_grad()
def same_seed_agreement(student, teacher, labels: torch.Tensor, seed: int = 0, cfg: float = 1.5,
                        top_k: int = 0, top_p: float = 0.0, batch: int = 32) -> dict:
    """Generate with the same seeds and classes; compare tokens per scale and images (PSNR)."""
    S = len(teacher.patch_nums)
    agree, n_tok, psnrs = torch.zeros(S), torch.zeros(S), []
    for i, g in zip(range(0, len(labels), batch), batch_seeds(seed, len(labels), batch)):
        lb = labels[i:i + batch]
        kw = dict(g_seed=g, cfg=cfg, top_k=top_k, top_p=top_p, return_idx=True)
        img_t, idx_t = teacher.autoregressive_infer_cfg(len(lb), lb, **kw)
        img_s, idx_s = student.autoregressive_infer_cfg(len(lb), lb, **kw)
        for s in range(S):
            agree[s] += (idx_t[s] == idx_s[s]).float().sum()
            n_tok[s] += idx_t[s].numel()
        psnrs.append(psnr(img_s, img_t))
    p = torch.cat(psnrs)
    finite = p[torch.isfinite(p)]
    return {"token_agreement_per_scale": (agree / n_tok).tolist(),
            "token_agreement": (agree.sum() / n_tok.sum()).item(),
            "psnr_db": finite.mean().item() if len(finite) else math.inf,
            "identical_images": int((~torch.isfinite(p)).sum())}
