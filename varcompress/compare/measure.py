"""The numbers of one comparison row: size, FLOPs, latency, quality. Every model is counted the same way.

- FLOPs: `flops()` of activated/token-pruned models (their static ScaleWork), var_flops of
  dense ones; both are `varcompress.flops.var_flops` (transformer, per image, CFG rows).
- Active params per token: the linear-layer part of that count (qkv, proj, FFN, router,
  word embedding, head) / 2 / (tokens x CFG rows): the weights a generated token is
  multiplied by, averaged over tokens (a skipped token multiplies none of a block's).
- Latency: `autoregressive_infer_cfg` on one batch, timed round-robin over all models
  (rotated order each repeat, median), so contention from other jobs hits all alike.
- Quality: the testbed protocol (`testbed_metrics`) and teacher-relative metrics on one
  shared set of teacher-drawn maps; same seeds and classes for every model.
"""
from __future__ import annotations

import math
import statistics
import time

import torch

from ..flops import FlopsReport, var_flops
from ..streams import derive_seed

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


@torch.no_grad()
def relative_metrics(var, teacher, maps, proto) -> dict:
    from ..metrics.teacher_relative import same_seed_agreement, teacher_forced_agreement
    from ..teacher_tokens import balanced_labels

    tf = teacher_forced_agreement(var, teacher, maps)
    ss = same_seed_agreement(var, teacher, balanced_labels(proto.same_seed, teacher.num_classes),
                             seed=derive_seed(proto.seed, "same_seed"), **proto.sampling)
    return {"kl": tf["kl"], "top1": tf["top1_agreement"], "token_agreement": ss["token_agreement"],
            "psnr_db": _finite(ss["psnr_db"]),
            "per_scale": {"kl": tf["kl_per_scale"], "top1": tf["top1_per_scale"],
                          "token_agreement": ss["token_agreement_per_scale"]}}


def _runners(var, batch: int, sampling: dict, seed: int) -> tuple:
    """(eager call, engine call or None) generating one batch of `var`; None where the engine refuses the model."""
    from ..engine import Engine
    from ..errors import VarcompressError

    labels = torch.arange(batch, device=var.pos_1LC.device) % var.num_classes
    try:
        eng = Engine(var)
    except VarcompressError:
        eng = None
    eager = lambda: var.autoregressive_infer_cfg(batch, labels, g_seed=seed, **sampling)  # noqa: E731
    return eager, (lambda: eng.generate(batch, labels, g_seed=seed, **sampling)) if eng is not None else None


@torch.no_grad()
def time_generation(models: list, batch: int, repeats: int, warmup: int, sampling: dict, seed: int = 0,
                    log=None) -> list[tuple[float, float | None]]:
    """(eager, engine) median seconds per batch of each model, measured round-robin (order rotated per
    repeat, every model's eager and engine calls in each round); engine None where it refuses a model."""
    calls = [c for var in models for c in _runners(var, batch, sampling, seed)]
    n = len(calls)
    times: list[list[float]] = [[] for _ in range(n)]
    for r in range(warmup + repeats):
        for j in range(n):
            i = (j + r) % n
            if calls[i] is None:
                continue
            t0 = time.perf_counter()
            calls[i]()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[i].append(dt)
        if log is not None:
            log(f"latency: round {r + 1}/{warmup + repeats}")
    med = [statistics.median(t) if t else None for t in times]
    return list(zip(med[0::2], med[1::2]))
