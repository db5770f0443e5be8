"""At a budget: teacher forcing = cached generation, analytic FLOPs = executed FLOPs, targets met."""
from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from varcompress.activated.config import keep_counts
from varcompress.convert import ConvertConfig, convert, load_activated, save_activated
from varcompress.flops import var_flops
from varcompress.models.vqvae import VQVAE, VQVAEConfig

from .helpers import tiny_var


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    vae = VQVAE(VQVAEConfig(vocab_size=32, z_channels=8, ch=32, ch_mult=(1, 2), patch_nums=(1, 2, 3, 4))).eval()
    var = tiny_var(0).attach_vae(vae)
    calib = (torch.randint(0, 10, (12,)), torch.randn(12, var.L - 1, var.Cvae))
    return var, vae, calib


def cached_vs_teacher(model, vae, labels):
    """Max |logits recorded during cached generation - teacher-forced logits on the drawn tokens| (cfg=0)."""
    rec = []
    hook = model.head.register_forward_hook(lambda m, i, o: rec.append(o.detach().clone()))
    try:
        _, idx = model.autoregressive_infer_cfg(len(labels), labels, g_seed=0, cfg=0.0, top_k=1, return_idx=True)
    finally:
        hook.remove()
    with torch.no_grad():
        tf = model(labels, vae.idxBl_to_var_input(idx))
    B = len(labels)
    return max((tf[:, bg:ed] - r[:B]).abs().max().item() for (bg, ed), r in zip(model.begin_ends, rec))


SPARSE = [
    dict(selector="learned", reconstruction="prev_scale"),
    dict(selector="learned", reconstruction="identity"),
    dict(selector="residual", reconstruction="prev_scale", upsample="nearest"),
    dict(selector="residual", reconstruction="identity", shared_experts=1, top_k=1),
    dict(selector="learned", reconstruction="prev_scale", routing="dynamic", tau=0.5),
    dict(selector="learned", reconstruction="prev_scale", router="mlp", router_steps=50),
    dict(selector="learned", reconstruction="prev_scale", skipped_kv="computed"),
    dict(selector="residual", reconstruction="cached", skipped_kv="computed"),
]


@pytest.mark.parametrize("kw", SPARSE)
def test_teacher_forcing_matches_cached_generation(pair, kw):
    var, vae, calib = pair
    cfg = ConvertConfig(**{**dict(experts=4, top_k=2, keep_ratio=[1.0, 1.0, 0.5, 0.5], calib_tokens=512), **kw})
    act = convert(var, cfg, calib=calib)
    assert act.blocks[0].keep_counts == [1, 4, 4, 8]
    assert cached_vs_teacher(act, vae, torch.tensor([1, 5, 7])) <= 1e-5


@pytest.mark.parametrize("kw", [dict(), dict(selector="residual", shared_experts=1, top_k=1), dict(router="mlp"),
                                dict(skipped_kv="computed")])
def test_analytic_flops_match_executed(pair, kw):
    var, vae, calib = pair
    cfg = ConvertConfig(**{**dict(experts=4, top_k=2, keep_ratio=[1.0, 1.0, 0.5, 0.5], calib_tokens=512,
                                  router_steps=20), **kw})
    act = convert(var, cfg, calib=calib)
    vae_classes = {type(m).__name__ for m in vae.modules()}
    B = 2
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        act.autoregressive_infer_cfg(B, torch.tensor([1, 2]), g_seed=0, cfg=1.5, top_k=1)
    counts = {k: sum(v.values()) for k, v in fc.get_flop_counts().items()
              if "." not in k and k != "Global" and k not in vae_classes}
    executed = sum(counts.values()) / B / 1e9
    analytic = act.flops().transformer
    assert abs(analytic - executed) / executed < 0.02
    assert analytic < 0.6 * var_flops(var.cfg).transformer


def test_recorded_work_prices_dynamic_routing(pair):
    var, vae, calib = pair
    act = convert(var, ConvertConfig(experts=4, routing="dynamic", tau=0.3, keep_ratio=0.5, calib_tokens=512),
                  calib=calib)
    with act.record_work() as work:
        act.autoregressive_infer_cfg(2, torch.tensor([1, 2]), g_seed=0, cfg=1.5, top_k=1)
    ffn = act.blocks[0].expert_ffns()[0]
    assert 0 < work[0][3].ffn_hidden <= ffn.E * ffn.h
    assert act.flops(work).transformer < var_flops(var.cfg).transformer


@pytest.mark.parametrize("allocation, granularity", [("uniform", "scale"), ("sensitivity", "scale"),
                                                     ("sensitivity", "block")])
def test_flops_target_is_met(pair, allocation, granularity):
    var, vae, calib = pair
    act = convert(var, ConvertConfig(experts=4, top_k=4, flops_target=0.7, allocation=allocation,
                                     keep_granularity=granularity, calib_tokens=512, sensitivity_samples=2,
                                     sparse_scales=2), calib=calib)
    frac = act.budget()["fraction"]
    assert 0.55 < frac <= 0.7
    alloc = act.convert_report["allocation"]
    assert alloc["method"] == allocation and act.convert_cfg.top_k == alloc["top_k"]
    assert act.convert_cfg.keep_ratio == alloc["keep_ratio"]
    per_block = act.budget()["keep_counts_per_block"]
    if granularity == "block":   # one keep list per block, each block's own counts
        cells = alloc["sensitivity"]["cell"]   # (block, sparse scale) -> KL per level
        assert len(alloc["keep_ratio"]) == len(var.blocks) and len(cells) == 2 * 2 and len(cells["1,3"]) == 9
        assert per_block == [keep_counts(var.patch_nums, r) for r in alloc["keep_ratio"]]
    else:
        assert len(alloc["keep_ratio"]) == len(var.patch_nums) and all(c == per_block[0] for c in per_block)
    assert cached_vs_teacher(act, vae, torch.tensor([3, 4])) <= 1e-5


def test_blocks_keep_their_own_token_counts(pair, tmp_path):
    """Per-block keep ratios: each block computes its own count; teacher forcing = cached generation,
    the FLOPs follow the counts, and a save / load round trip rebuilds the same blocks."""
    var, vae, calib = pair
    keep = [[1.0, 1.0, 0.5, 0.5], [1.0, 1.0, 1.0, 0.25]]
    act = convert(var, ConvertConfig(experts=4, top_k=2, keep_ratio=keep, calib_tokens=512), calib=calib)
    assert [blk.keep_counts for blk in act.blocks] == [[1, 4, 4, 8], [1, 4, 9, 4]]
    assert cached_vs_teacher(act, vae, torch.tensor([1, 5])) <= 1e-5
    assert [w.tokens for w in act.scale_work()[1]] == [1, 4, 9, 4]
    loaded = load_activated(save_activated(act, tmp_path / "m"))
    assert [blk.keep_counts for blk in loaded.blocks] == [[1, 4, 4, 8], [1, 4, 9, 4]]


def test_experts_only_route_on_the_last_scales(pair):
    var, vae, calib = pair
    act = convert(var, ConvertConfig(experts=4, top_k=1, expert_scales=1, calib_tokens=512), calib=calib)
    labels, x = calib
    with torch.no_grad():
        dense, sparse = var(labels, x), act(labels, x)
    bg = act.begin_ends[-1][0]
    assert (dense[:, :bg] - sparse[:, :bg]).abs().max().item() <= 1e-5  # scales 0..2 untouched
    assert (dense[:, bg:] - sparse[:, bg:]).abs().max().item() > 1e-3
    work = act.scale_work()
    assert work[0][2].ffn_hidden == 256 and work[0][3].ffn_hidden == 64


def test_sparse_scales_zero_allocates_the_budget_to_experts_only(pair):
    var, vae, calib = pair
    act = convert(var, ConvertConfig(experts=4, expert_scales=None, sparse_scales=0, flops_target=0.8,
                                     calib_tokens=512, sensitivity_samples=2), calib=calib)
    b = act.budget()
    assert b["fraction"] <= 0.8 and min(b["top_k"]) < 4
    assert b["keep_counts"] == [pn * pn for pn in var.patch_nums]  # every token computed
    assert cached_vs_teacher(act, vae, torch.tensor([3, 4])) <= 1e-5
