"""Build one GatedBlock from a dense block: fx rewrite, experts, router, selector.

With captures (teacher activations) everything is fitted; without (`cap=None`) an
empty skeleton of the same structure is built, which `load_activated` fills from disk.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .clustering import cluster_neurons
from .config import ConvertConfig
from .experts import ExpertFFN
from .fx_pass import FFNSite, rewrite_block, split_attention_rows
from .gated_block import KV_ARG, PLAN_ARG, GatedBlock
from .router import Router, fit_router
from .selector import TokenSelector, fit_selector
from .token_path import Reconstruction


@dataclass
class BlockCapture:
    """Teacher activations of one block at the captured tokens (T rows)."""
    x_in: torch.Tensor        # (T, C) block input
    x_out: torch.Tensor       # (T, C) block output
    ffn_in: dict[str, torch.Tensor]  # fc1 qualname -> (T, C) FFN input
    scale: torch.Tensor       # (T,) scale index of each token
    skip_base: torch.Tensor | None  # (T, C) the update the block's reconstruction gives the token if
                                    # skipped (needed only to fit a learned selector)


def _quiet(phase: str) -> None:
    pass


def _device(block: nn.Module) -> torch.device:
    return next(block.parameters()).device


def _make_expert(site: FFNSite, fc1: nn.Linear, fc2: nn.Linear, cfg: ConvertConfig, top_k: int,
                 X: torch.Tensor | None, stats: dict, X_routed: torch.Tensor | None = None,
                 on_phase=_quiet) -> ExpertFFN:
    """Cluster on all calibration tokens X; fit router and compensation on X_routed (default X).

    `on_phase(name)` is called as each phase (clustering, router) finishes: convert's progress bar."""
    router = Router(site.in_features, cfg.routed_experts, cfg.router, cfg.router_hidden, cfg.router_target)
    kw = dict(shared=cfg.shared_experts, top_k=top_k, routing=cfg.routing, tau=cfg.tau)
    if X is None:
        return ExpertFFN(site.in_features, site.hidden, site.out_features, cfg.experts, site.approximate,
                         router=router, **kw)
    X = X.to(fc1.weight.device, fc1.weight.dtype)
    acts = F.gelu(fc1(X), approximate=site.approximate) if cfg.clustering == "coact" else None
    groups = cluster_neurons(cfg.clustering, fc1.weight, cfg.experts, cfg.seed, acts)
    norms = ExpertFFN.from_dense(fc1, fc2, groups, site.approximate).expert_norms(X)
    # shared experts = the most-activated clusters (largest mean output norm); they go first
    by_mass = norms.mean(0).argsort(descending=True).tolist()
    order = by_mass[:cfg.shared_experts] + sorted(by_mass[cfg.shared_experts:])
    groups, norms = groups[order], norms[:, order]
    on_phase("clustering")
    m = ExpertFFN.from_dense(fc1, fc2, groups, site.approximate, router=router.to(fc1.weight.device), **kw)
    S = cfg.shared_experts
    if m.routed:
        Xr = X if X_routed is None else X_routed.to(X.device, X.dtype)
        stats["router_r2"] = fit_router(m.router, Xr, m.expert_norms(Xr)[:, S:], cfg.router_steps, cfg.seed)["r2"]
        with torch.no_grad():
            _, mask = m.route(Xr)
            m.expected_active.fill_(float(mask.sum(1).float().mean()))
        if cfg.compensation:
            m.calibrate_compensation(Xr)
    stats["expert_mass"] = (norms.mean(0) / norms.mean(0).sum()).tolist()
    on_phase("router")
    return m


def block_reconstruction(cfg: ConvertConfig, patch_nums) -> Reconstruction:
    """What skipped tokens get; the cache scale defaults to the one before the first sparse scale."""
    cache = cfg.cache_scale if cfg.cache_scale is not None else max(0, len(patch_nums) - cfg.sparse_scales - 1)
    return Reconstruction(cfg.reconstruction, tuple(patch_nums), cfg.upsample, cache)


def build_gated_block(block: nn.Module, index: int, cfg: ConvertConfig, patch_nums, norm_eps: float,
                      keep_counts: list[int], top_k: int, cap: BlockCapture | None = None,
                      stats: dict | None = None, on_phase=_quiet) -> GatedBlock:
    """GatedBlock around an fx-rewritten copy of `block` (the original is left untouched)."""
    stats = {} if stats is None else stats
    dev = _device(block)
    src = copy.deepcopy(block) if dev.type != "meta" else block
    C = None

    def make(site: FFNSite, fc1: nn.Linear, fc2: nn.Linear) -> ExpertFFN:
        nonlocal C
        C = site.in_features
        if cap is None:  # skeleton: allocate on the block's device (meta when loading)
            with torch.device(dev):
                return _make_expert(site, fc1, fc2, cfg, top_k, None, stats)
        X = cap.ffn_in[site.fc1]
        first = 0 if cfg.expert_scales is None else len(patch_nums) - cfg.expert_scales
        routed = cap.scale >= first  # fit router and compensation on the tokens that will be routed
        return _make_expert(site, fc1, fc2, cfg, top_k, X, stats, X[routed] if int(routed.sum()) >= 64 else X,
                            on_phase)

    inner, sites = rewrite_block(src, make, prefix=f"blocks.{index}", index=index, plan_arg=PLAN_ARG)
    with torch.device(dev):
        sel = TokenSelector(C, cfg.selector, norm_eps, cfg.upsample)
    if cap is not None and cfg.selector == "learned":
        skip_error = (cap.x_out - cap.x_in - cap.skip_base).to(dev)
        stats["selector_r2"] = fit_selector(sel, cap.x_in.to(dev), skip_error, cap.scale)["r2_within_scale"]
    if cap is not None:
        on_phase("selector")
    if cfg.skipped_kv == "computed":
        split_attention_rows(inner, KV_ARG)
    return GatedBlock(inner, sel, block_reconstruction(cfg, patch_nums), keep_counts, cfg.expert_scales,
                      cfg.skipped_kv)
