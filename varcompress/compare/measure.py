"""The numbers of one comparison row: size, FLOPs, latency, quality. Every model is counted the same way.

- FLOPs: `flops()` of activated/token-pruned models (their static ScaleWork), var_flops of
  dense ones; both are `varcompress.flops.var_flops` (transformer, per image, CFG rows).
- Active params per token: the linear-layer part of that count (qkv, proj, FFN, router,
  word embedding, head) / 2 / (tokens x CFG rows): the weights a generated token is
  multiplied by, averaged over tokens (a skipped token multiplies none of a block's).
- Latency: `compare.timing` (every model, path and batch in its own fresh process).
- Quality: the testbed protocol (`testbed_metrics`) over several sampling seeds (mean and
  spread; the real reference stays fixed) and teacher-relative metrics on one shared set
  of teacher-drawn maps; same seeds and classes for every model.
"""
from __future__ import annotations

import math
import statistics

import torch

from ..evaluate import teacher_metrics, testbed_metrics
from ..flops import FlopsReport, var_flops

LINEAR = ("qkv", "proj", "ffn", "router", "embed", "head")


def flops_report(var) -> FlopsReport:
    return var.flops() if hasattr(var, "flops") else var_flops(var.cfg)


def size_and_flops(var, teacher_gflops: float) -> dict:
    rep = flops_report(var)
    comp = rep.by_component
    tokens = sum(pn * pn for pn in var.patch_nums) * 2  # CFG rows
    g = rep.transformer
    return {"params_total": int(sum(p.numel() for p in var.parameters())),
            "params_active_per_token": sum(comp[c] for c in LINEAR) * 1e9 / 2 / tokens,
            "gflops": g, "flops_fraction": g / teacher_gflops, "flops_reduction": 1 - g / teacher_gflops}


def _finite(v) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def relative_metrics(var, teacher, maps, proto) -> dict:
    """`evaluate.teacher_metrics` on the shared maps, as the table's columns."""
    r = teacher_metrics(var, teacher, proto, maps)
    return {"kl": r["kl"], "top1": r["top1_agreement"], "token_agreement": r["token_agreement"],
            "psnr_db": _finite(r["psnr_db"]),
            "per_scale": {"kl": r["kl_per_scale"], "top1": r["top1_per_scale"],
                          "token_agreement": r["token_agreement_per_scale"]}}


QUALITY = ("accuracy", "fid", "precision", "recall")


def quality_over_seeds(var, dataset: str, proto, seeds: list[int]) -> tuple[dict, torch.Tensor]:
    """Testbed metrics for each sampling seed (fixed real reference): mean, sample std and per-seed
    values; returns them with the first seed's images (for the grids)."""
    per, first = {k: [] for k in QUALITY}, None
    for s in seeds:
        tb, images = testbed_metrics(var, dataset, proto, sample_seed=s)
        first = images if first is None else first
        for k in QUALITY:
            per[k].append(float(tb[k]))
    out = {}
    for k, v in per.items():
        out[k] = statistics.fmean(v)
        out[f"{k}_std"] = statistics.stdev(v) if len(v) > 1 else None
    out["per_seed"] = {"seeds": list(seeds), **per}
    return out, first
