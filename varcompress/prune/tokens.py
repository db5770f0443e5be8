"""Training-free token pruning, built through `convert`: computation and FLOPs count are the activated model's.

The model is convert's ActivatedVAR with one expert that is always on (the FFN stays
dense, no router runs) and a parameter-free selector: at scale s every block computes
the `k_s` tokens with the highest score and reconstructs the others, exactly as the
activated model does; nothing is learned. Two flavours share this code:
- residual tokens: score ||x - up(x at scale s-1)||, reconstruction `identity` | `prev_scale`;
- FastVAR-style cached token pruning: score ||x - mean||^2, reconstruction `cached` (the
  block's update at `cache_scale`, upsampled).
FLOPs come from `ActivatedVAR.flops()` (varcompress.flops).

Keep counts for a target: one ratio on the last `sparse_scales` scales (bisection), then
the largest FLOPs under the target among counts within +-SLACK tokens of that ratio's on
every sparse scale (a token costs slightly more at later scales, which have more keys, so
such combinations land between single-token steps): the allocation stays uniform and the
match is well within 1% (the testbed's 155-token images included).
"""
from __future__ import annotations

import dataclasses
import itertools

import torch

from ..activated.config import ConvertConfig
from ..convert.api import convert
from ..errors import VarcompressError
from ..flops import ScaleWork, var_flops

SLACK = 2


def token_convert_config(num_scales: int, sparse_scales: int, reconstruction: str, upsample: str,
                         calib_samples: int, seed: int, selector: str = "residual",
                         cache_scale: int | None = None) -> ConvertConfig:
    """All scales dense to start with; one always-on expert; a parameter-free selector."""
    return ConvertConfig(experts=1, top_k=None, clustering="random", router="linear", router_steps=0,
                         compensation=False, keep_ratio=[1.0] * num_scales,
                         sparse_scales=min(sparse_scales, num_scales), selector=selector,
                         reconstruction=reconstruction, upsample=upsample, cache_scale=cache_scale, flops_target=None,
                         calib_samples=calib_samples, calib_tokens=2048, seed=seed)


@torch.no_grad()
def token_model(var, calib, sparse_scales: int, reconstruction: str, upsample: str, seed: int = 0,
                selector: str = "residual", cache_scale: int | None = None):
    """An ActivatedVAR equal to `var` (every token computed) whose keep counts `set_counts` then lowers."""
    S = len(var.patch_nums)
    cfg = token_convert_config(S, sparse_scales, reconstruction, upsample, max(1, calib[0].shape[0]), seed,
                               selector, cache_scale)
    model = convert(var, cfg, calib=calib)
    model.convert_report = {}  # (expert/router statistics of a single always-on expert mean nothing)
    return model


def set_counts(model, counts: list[int]) -> None:
    """Keep exactly counts[s] tokens at scale s (ratios k/n stored in the model's convert config)."""
    ratios = [min(1.0, k / (pn * pn)) for k, pn in zip(counts, model.patch_nums)]
    model.set_keep(ratios)
    got = model.blocks[0].keep_counts
    if list(got) != list(counts):  # k/n * n rounds back to k; guard against float surprises
        raise VarcompressError(f"internal: keep counts {got} != requested {counts}")


def gflops(model) -> float:
    return model.flops().transformer


def _counts_for_ratio(patch_nums, sparse: list[int], r: float) -> list[int]:
    return [max(1, round(r * pn * pn)) if s in sparse else pn * pn for s, pn in enumerate(patch_nums)]


def solve_counts(model, target_gflops: float, sparse_scales: int) -> list[int]:
    """Largest-FLOPs keep counts (last `sparse_scales` scales) with FLOPs <= target_gflops."""
    pns, S = model.patch_nums, len(model.patch_nums)
    sparse = list(range(S - min(sparse_scales, S), S))

    def f(counts):
        set_counts(model, counts)
        return gflops(model)

    lo_counts = _counts_for_ratio(pns, sparse, 0.0)
    if f(lo_counts) > target_gflops + 1e-12:
        raise VarcompressError(f"FLOPs target {target_gflops:.4g} GFLOPs is below what token pruning of the "
                               f"last {len(sparse)} scales can reach ({f(lo_counts):.4g} GFLOPs at 1 token/scale)")
    lo, hi = 0.0, 1.0
    if f(_counts_for_ratio(pns, sparse, 1.0)) <= target_gflops + 1e-12:
        best = _counts_for_ratio(pns, sparse, 1.0)
    else:
        for _ in range(40):
            mid = (lo + hi) / 2
            if f(_counts_for_ratio(pns, sparse, mid)) <= target_gflops + 1e-12:
                lo = mid
            else:
                hi = mid
        best = _counts_for_ratio(pns, sparse, lo)
    cur = f(best)
    # refine toward the target: every sparse scale may move up to SLACK tokens away from the uniform
    # ratio's count (a token costs a little more at later scales, which have more keys, so such
    # combinations land between single-token steps); the allocation stays essentially uniform
    base = list(best)
    for d in itertools.product(range(-SLACK, SLACK + 1), repeat=len(sparse)):
        c = list(base)
        for s, dk in zip(sparse, d):
            c[s] += dk
        if all(1 <= c[s] <= pns[s] ** 2 for s in sparse):
            g = f(c)
            if cur < g <= target_gflops + 1e-12:
                cur, best = g, c
    set_counts(model, best)
    return best


def ffn_hidden_for(cfg, target_gflops: float, hidden_now: int, work=None) -> float:
    """FFN width (fractional) at which the model costs target_gflops: FLOPs are linear in the width.

    `work` = the model's own `scale_work()` (token-pruned models; keep counts fixed), or None
    for a dense VAR; priced with var_flops, the width being the only thing changed.
    """
    def at(h: float) -> float:
        if work is None:
            w = [[ScaleWork(tokens=pn * pn, keys=sum(p * p for p in cfg.patch_nums[:s + 1]), ffn_hidden=h)
                  for s, pn in enumerate(cfg.patch_nums)] for _ in range(cfg.depth)]
        else:
            w = [[dataclasses.replace(sw, ffn_hidden=h) for sw in row] for row in work]
        return var_flops(cfg, w).transformer

    f0, f1 = at(0.0), at(float(hidden_now))
    if f1 <= f0:
        raise VarcompressError("internal: FFN width does not change FLOPs")
    return (target_gflops - f0) / (f1 - f0) * hidden_now
