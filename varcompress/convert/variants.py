"""Compare conversion variants against the dense teacher on held-out data.

Per variant: analytic FLOPs fraction (measured work for dynamic-k), teacher-forced
KL(teacher || student) and top-1 agreement on held-out tokens (cond and uncond rows),
and, with a VQVAE, greedy generation agreement (fraction of drawn tokens equal to the
teacher's, cfg 1.5, top_k=1) and the MSE between the teacher's and student's images.
Quality numbers are only meaningful on a trained teacher.
"""
from __future__ import annotations

import time

import torch

from ..activated.config import ConvertConfig
from ..flops import var_flops
from ..metrics.kl import log_probs, token_kl
from ..models.var import with_uncond
from ..streams import derive_seed
from .api import convert
from .calibrate import calibration_data

PRESETS = {
    # component choices at a fixed budget: half the routed experts, keep 0.5 on the last 3 scales
    "components": {
        "kmeans": dict(),
        "kmeans/no-comp": dict(compensation=False),
        "kmeans/all-scales": dict(expert_scales=None),
        "kmeans/all-scales/no-comp": dict(expert_scales=None, compensation=False),
        "kmeans/oracle": dict(oracle=True),
        "coact": dict(clustering="coact"),
        "random": dict(clustering="random"),
        "kmeans/mlp": dict(router="mlp"),
        "kmeans/norm-target": dict(router_target="norm"),
        "kmeans/shared1": dict(shared_experts=1, top_k=3),
        "kmeans/E16-top8": dict(experts=16, top_k=8),
    },
    "tokens": {
        "learned/prev_scale/bilinear": dict(selector="learned", reconstruction="prev_scale"),
        "learned/prev_scale/nearest": dict(selector="learned", reconstruction="prev_scale", upsample="nearest"),
        "learned/identity": dict(selector="learned", reconstruction="identity"),
        "residual/prev_scale/bilinear": dict(selector="residual", reconstruction="prev_scale"),
        "residual/identity": dict(selector="residual", reconstruction="identity"),
        "residual/identity/keep0.75": dict(selector="residual", reconstruction="identity", keep_ratio=0.75),
    },
    "skipped_kv": {   # who writes K/V at a skipped token; keep 0.4 with K/V ~ the FLOPs of keep 0.5 without
        f"{sel}/{rec}/kv-{kv}/keep{r}": dict(selector=sel, reconstruction=rec, skipped_kv=kv, keep_ratio=r)
        for sel, rec in (("residual", "identity"), ("learned", "prev_scale"))
        for kv in ("none", "computed") for r in (0.5, 0.4)
    },
    "routing": {
        "topk2": dict(top_k=2), "topk3": dict(top_k=3), "topk4": dict(top_k=4), "topk5": dict(top_k=5),
        "topk6": dict(top_k=6),
        "dyn0.3": dict(routing="dynamic", tau=0.3), "dyn0.5": dict(routing="dynamic", tau=0.5),
        "dyn0.7": dict(routing="dynamic", tau=0.7), "dyn0.85": dict(routing="dynamic", tau=0.85),
    },
    "budget": {
        f"{alloc}@{r}": dict(top_k=None, keep_ratio=1.0, flops_target=r, allocation=alloc)
        for r in (0.85, 0.7) for alloc in ("uniform", "sensitivity")
    },
    "keep_granularity": {   # dual sparsity at a budget: one keep ratio per scale, or per (block, scale)
        f"{g}@{r}": dict(top_k=None, keep_ratio=1.0, flops_target=r, keep_granularity=g)
        for r in (0.6, 0.45) for g in ("scale", "block")
    },
}
PRESET_BASE = {"components": dict(experts=8, top_k=4, keep_ratio=1.0),
               "tokens": dict(experts=8, top_k=None, keep_ratio=0.5),
               "skipped_kv": dict(experts=8, top_k=None),
               "routing": dict(experts=8, keep_ratio=1.0),
               "budget": dict(experts=8),
               "keep_granularity": dict(experts=8, selector="learned", reconstruction="prev_scale",
                                        expert_scales=None)}


def preset_variants(name: str, **base) -> dict[str, ConvertConfig | tuple[ConvertConfig, dict]]:
    """The named preset as ConvertConfigs; `base` overrides the preset's shared settings.

    A variant with options (e.g. oracle routing) is a (ConvertConfig, {"oracle": True}) pair.
    """
    common, out = {**PRESET_BASE[name], **base}, {}
    for k, v in PRESETS[name].items():
        v = dict(v)
        opts = {"oracle": v.pop("oracle")} if "oracle" in v else {}
        cfg = ConvertConfig(**{**common, **v})
        out[k] = (cfg, opts) if opts else cfg
    return out


@torch.no_grad()
def evaluate(model, teacher, labels, x, t_logits, gen_labels=None, batch: int = 8) -> dict:
    kl, agree, n = 0.0, 0.0, 0
    t0 = time.perf_counter()
    with model.record_work() as work:
        for i in range(0, labels.shape[0], batch):
            lp = log_probs(model(labels[i:i + batch], x[i:i + batch]))
            tp = log_probs(t_logits[i:i + batch])
            kl += float(token_kl(tp, lp).sum())
            agree += float((lp.argmax(-1) == tp.argmax(-1)).float().sum())
            n += lp.shape[0] * lp.shape[1]
    dynamic = any(m.routing == "dynamic" for blk in model.blocks for m in blk.expert_ffns())
    # (oracle routing is priced like its top-k, i.e. as if a free perfect router existed)
    dense = teacher_flops(teacher)
    out = {"flops_fraction": model.flops(work if dynamic else None).transformer / dense,
           "kl": kl / n, "top1_agree": agree / n, "tf_seconds": time.perf_counter() - t0}
    if gen_labels is not None and getattr(teacher, "vae", None) is not None:
        B = len(gen_labels)
        g = torch.as_tensor(gen_labels)
        ti, tidx = teacher.autoregressive_infer_cfg(B, g, g_seed=0, cfg=1.5, top_k=1, return_idx=True)
        si, sidx = model.autoregressive_infer_cfg(B, g, g_seed=0, cfg=1.5, top_k=1, return_idx=True)
        same = sum(float((a == b).float().sum()) for a, b in zip(tidx, sidx))
        out["gen_token_agree"] = same / sum(a.numel() for a in tidx)
        out["gen_image_mse"] = float((ti - si).pow(2).mean())
    return out


def teacher_flops(teacher) -> float:
    return var_flops(teacher.cfg).transformer


@torch.no_grad()
def compare_variants(teacher, variants: dict[str, ConvertConfig], calib=None, heldout=None,
                     gen_labels=None, calib_samples: int = 32, heldout_samples: int = 16, seed: int = 0,
                     log=print) -> list[dict]:
    """Convert `teacher` with each variant (same calibration data) and evaluate on held-out data."""
    if calib is None:
        calib = calibration_data(teacher, calib_samples, derive_seed(seed, "calibration"))
    if heldout is None:
        heldout = calibration_data(teacher, heldout_samples, derive_seed(seed, "held_out"))
    hl, hx = with_uncond(teacher, *heldout)
    t_logits = torch.cat([teacher(hl[i:i + 8], hx[i:i + 8]) for i in range(0, hl.shape[0], 8)])
    rows = []
    for name, cfg in variants.items():
        cfg, opts = cfg if isinstance(cfg, tuple) else (cfg, {})
        t0 = time.perf_counter()
        model = convert(teacher, cfg, calib=calib)
        if opts.get("oracle"):  # upper bound for the router: route by the true expert norms
            for blk in model.blocks:
                for m in blk.expert_ffns():
                    m.routing = "oracle"
        row = {"variant": name, "convert_seconds": time.perf_counter() - t0}
        row.update(evaluate(model, teacher, hl, hx, t_logits, gen_labels))
        blocks = model.convert_report["blocks"]
        for key in ("router_r2", "selector_r2"):
            vals = [b[key] for b in blocks if key in b]
            if vals:
                row[key] = sum(vals) / len(vals)
        if "allocation" in model.convert_report:
            a = model.convert_report["allocation"]
            row["allocation"] = {"top_k": a["top_k"], "keep_ratio": a["keep_ratio"]}
        rows.append(row)
        log(format_row(row))
    return rows


def format_row(r: dict) -> str:
    parts = [f"{r['variant']:<30}", f"flops={r['flops_fraction']:.3f}", f"kl={r['kl']:.5f}",
             f"top1={r['top1_agree']:.4f}"]
    for k in ("gen_token_agree", "gen_image_mse", "router_r2", "selector_r2"):
        if k in r:
            parts.append(f"{k}={r[k]:.4f}")
    if "allocation" in r:
        parts.append(f"alloc={r['allocation']}")
    return "  ".join(parts)
