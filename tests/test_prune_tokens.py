"""Static token pruning (through convert) and neurons + tokens: exact at keep 1.0, FLOPs on target."""
from __future__ import annotations

import pytest
import torch

from varcompress.convert import ActivatedVAR
from varcompress.flops import var_flops
from varcompress.models.vqvae import VQVAE, VQVAEConfig
from varcompress.prune import PruneConfig, load_pruned, prune, save_pruned

from .helpers import tiny_var

PN = (1, 2, 3, 4, 6, 8)  # enough tokens at the last scales for a 1% FLOPs match


def pair(patch_nums=PN):
    torch.manual_seed(0)
    vae = VQVAE(VQVAEConfig(vocab_size=32, z_channels=8, ch=32, ch_mult=(1, 2), patch_nums=patch_nums)).eval()
    return tiny_var(patch_nums=patch_nums).attach_vae(vae)


def calib(var, n=6):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, var.num_classes, (n,), generator=g), torch.randn(n, var.L - 1, var.Cvae, generator=g)


@pytest.mark.parametrize("reconstruction", ["identity", "prev_scale"])
def test_keep_one_equals_dense(reconstruction):
    var = pair()
    cfg = PruneConfig(method="tokens", keep_ratio=[1.0] * len(PN), reconstruction=reconstruction)
    m = prune(var, cfg, calib=calib(var)).model
    lab, x = calib(var)
    with torch.no_grad():
        assert (m(lab, x) - var(lab, x)).abs().max() < 1e-5
        kw = dict(g_seed=3, cfg=1.5, top_k=1, return_idx=True)
        _, a = var.autoregressive_infer_cfg(3, torch.tensor([1, 4, 7]), **kw)
        _, b = m.autoregressive_infer_cfg(3, torch.tensor([1, 4, 7]), **kw)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert m.flops().transformer == pytest.approx(var_flops(var.cfg).transformer)


@pytest.mark.parametrize("method,target", [("tokens", 0.8), ("tokens", 0.65), ("both", 0.75), ("both", 0.6)])
def test_flops_match_and_less_work(method, target):
    var = pair()
    res = prune(var, PruneConfig(method=method, flops_target=target, sparse_scales=3), calib=calib(var))
    m = res.model
    assert isinstance(m, ActivatedVAR)
    dense = var_flops(var.cfg).transformer
    got = m.flops().transformer  # the same counter as the activated model's budget()
    assert target * dense * 0.99 <= got <= target * dense * (1 + 1e-9)
    counts = m.blocks[0].keep_counts
    assert counts[:3] == [1, 4, 9] and sum(counts) < sum(p * p for p in PN)  # early scales dense
    H = var.blocks[0].ffn.fc1.out_features
    hidden = m.blocks[0].expert_ffns()[0].E * m.blocks[0].expert_ffns()[0].h
    assert (hidden < H) == (method == "both")
    lab, x = calib(var)
    with torch.no_grad():
        assert torch.isfinite(m(lab, x)).all()
        img = m.autoregressive_infer_cfg(2, torch.tensor([0, 1]), g_seed=0, cfg=1.5, top_k=4)
    assert img.shape[0] == 2 and torch.isfinite(img).all()


def test_token_pruned_roundtrip(tmp_path):
    var = pair()
    res = prune(var, PruneConfig(method="both", flops_target=0.7, reconstruction="identity"), calib=calib(var))
    out = save_pruned(res.model, res.info, tmp_path / "both")
    assert {"prune.json", "config.json", "model.safetensors"} <= {p.name for p in out.iterdir()}
    m, info = load_pruned(out, vae=var.vae)
    lab, x = calib(var)
    with torch.no_grad():
        assert torch.equal(m(lab, x), res.model(lab, x))
    assert info["keep_counts"] == m.blocks[0].keep_counts and info["method"] == "both"
    assert m.blocks[0].reconstruction == "identity"
