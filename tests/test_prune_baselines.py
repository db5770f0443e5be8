"""FastVAR-style cached token pruning and the CoDe-style scale split: exact when nothing is removed,
FLOPs on target, the engine agrees with the eager path, saved directories load back exactly."""
from __future__ import annotations

import pytest
import torch

from varcompress.activated.selector import upsample_tokens
from varcompress.engine import Engine
from varcompress.errors import VarcompressError
from varcompress.flops import var_flops
from varcompress.models.scale_split import ScaleSplitVAR
from varcompress.prune import PruneConfig, load_pruned, prune, save_pruned
from varcompress.prune.split import drop_blocks

from .test_prune_tokens import PN, calib, pair

GEN = dict(g_seed=3, cfg=1.5, top_k=1, return_idx=True)
LABELS = torch.tensor([1, 4, 7])


def same_as(m, var, tol=1e-5):
    lab, x = calib(var)
    with torch.no_grad():
        assert (m(lab, x) - var(lab, x)).abs().max() <= tol
        _, a = var.autoregressive_infer_cfg(3, LABELS, **GEN)
        _, b = m.autoregressive_infer_cfg(3, LABELS, **GEN)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("method", ["fastvar", "fastvar-wanda"])
def test_fastvar_keep_all_equals_dense(method):
    var = pair()
    cfg = PruneConfig(method=method, keep_ratio=[1.0] * len(PN)) if method == "fastvar" else \
        PruneConfig(method=method, flops_target=1.0, keep_ratio=[1.0] * len(PN))
    m = prune(var, cfg, calib=calib(var)).model
    same_as(m, var)
    assert m.flops().transformer == pytest.approx(var_flops(var.cfg).transformer)
    assert m.blocks[0].reconstruction == "cached" and m.blocks[0].selector.kind == "mean_distance"


@pytest.mark.parametrize("method,target", [("fastvar", 0.8), ("fastvar", 0.7), ("fastvar-wanda", 0.6)])
def test_fastvar_flops_cache_and_engine(method, target):
    var = pair()
    res = prune(var, PruneConfig(method=method, flops_target=target), calib=calib(var))
    m, dense = res.model, var_flops(var.cfg).transformer
    assert target * dense * 0.99 <= m.flops().transformer <= target * dense * (1 + 1e-9)
    S = len(PN)
    counts = m.blocks[0].keep_counts
    assert counts[:S - 2] == [p * p for p in PN[:S - 2]] and sum(counts) < sum(p * p for p in PN)
    assert m.blocks[0].cache_scale == S - 3  # the last dense scale
    with torch.no_grad():  # the engine mirrors the cached restoration exactly
        _, a = m.autoregressive_infer_cfg(3, LABELS, **GEN)
        _, b = Engine(m).generate(3, LABELS, **GEN)
        lab, x = calib(var)
        assert torch.isfinite(m(lab, x)).all()
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_cached_restoration_fills_from_the_cache_scale():
    """Teacher forcing: a skipped token's update is the cache scale's update map, upsampled."""
    var = pair()
    m = prune(var, PruneConfig(method="fastvar", keep_ratio=[1.0] * (len(PN) - 1) + [0.25]), calib=calib(var)).model
    blk, seen = m.blocks[0], {}
    blk.register_forward_hook(lambda mod, inp, out: seen.update(x=inp[0], y=out))
    lab, x = calib(var)
    with torch.no_grad():
        m(lab, x)
    be = m.begin_ends
    c, s = blk.cache_scale, len(PN) - 1
    u_c = (seen["y"] - seen["x"])[:, be[c][0]:be[c][1]]
    want = upsample_tokens(u_c, PN[c], PN[s], "area")
    got = (seen["y"] - seen["x"])[:, be[s][0]:be[s][1]]
    scores = (seen["x"][:, be[s][0]:be[s][1]] - seen["x"][:, be[s][0]:be[s][1]].mean(1, keepdim=True)).pow(2).sum(-1)
    skipped = scores.argsort(dim=1)[:, : PN[s] ** 2 - blk.keep_counts[s]]
    for r in range(got.shape[0]):
        assert torch.allclose(got[r, skipped[r]], want[r, skipped[r]], atol=1e-5)


def test_split_at_the_last_scale_and_with_the_teacher_as_small_model_is_dense():
    var = pair()
    S = len(PN)
    res = prune(var, PruneConfig(method="split", flops_target=1.0, split_scale=S, small_depth=1), calib=calib(var))
    same_as(res.model, var)
    assert res.model.flops().transformer == pytest.approx(var_flops(var.cfg).transformer)
    for split in (1, S - 2):  # hand-over with a full copy: the prefill rebuilds exactly the teacher's cache
        full = list(range(var.cfg.depth))
        same_as(ScaleSplitVAR(drop_blocks(var, full), drop_blocks(var, full), split).eval(), var)


@pytest.mark.parametrize("target", [0.7, 0.55])
def test_split_flops_save_load(tmp_path, target):
    var = pair()
    res = prune(var, PruneConfig(method="split", flops_target=target), calib=calib(var))
    m, dense = res.model, var_flops(var.cfg).transformer
    assert target * dense * 0.99 <= m.flops().transformer <= target * dense * (1 + 1e-9)
    assert res.info["split_scale"] == len(PN) - 2 and m.small.cfg.depth == 1
    with pytest.raises(VarcompressError):
        Engine(m)
    save_pruned(m, res.info, tmp_path / "s")
    back, info = load_pruned(tmp_path / "s", vae=var.vae)
    assert isinstance(back, ScaleSplitVAR) and info["method"] == "split"
    same_as(back, m, tol=0)


def test_split_unreachable_target_is_one_line():
    var = pair()
    for target in (0.3, 0.95):
        with pytest.raises(VarcompressError, match="split"):
            prune(var, PruneConfig(method="split", flops_target=target), calib=calib(var))


def test_old_name_tokens_is_residual_tokens():
    assert PruneConfig(method="tokens").method == "residual-tokens"
    with pytest.raises(VarcompressError):
        PruneConfig(method="wanda", split_scale=2)


def test_cli_lists_the_new_methods_and_keeps_the_old_name(tmp_path, capsys):
    from varcompress.cli import main

    assert main(["prune", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "fastvar" in text and "split" in text and "residual-tokens" in text
    rc = main(["prune", "digits", "--method", "tokens", "--flops-target", "0.8", "--calib-samples", "4",
               "--out", str(tmp_path / "t")])
    assert rc == 0 and "deprecated" in capsys.readouterr().err
    _, info = load_pruned(tmp_path / "t")
    assert info["method"] == "residual-tokens"
    assert main(["prune", "digits", "--method", "nope", "--flops-target", "0.8", "--out", str(tmp_path / "n")]) == 2
