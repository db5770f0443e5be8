"""FFN neuron pruning: physically smaller, FLOPs on target, exact at ratio 1, Wanda uses activations."""
from __future__ import annotations

import pytest
import torch

from varcompress import load_var
from varcompress.flops import var_flops
from varcompress.prune import (PruneConfig, activation_stats, load_pruned, neuron_scores, prune, prune_neurons,
                               save_pruned, select_neurons)

from .helpers import tiny_var


def calib(var, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, var.num_classes, (n,), generator=g), torch.randn(n, var.L - 1, var.Cvae, generator=g)


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
@pytest.mark.parametrize("target", [0.75, 0.6])
def test_physically_smaller_and_flops_on_target(method, target):
    var = tiny_var()
    res = prune(var, PruneConfig(method=method, flops_target=target), calib=calib(var))
    m, H = res.model, var.blocks[0].ffn.fc1.out_features
    h = m.blocks[0].ffn.fc1.out_features
    assert h < H and all(b.ffn.fc1.weight.shape == (h, 64) and b.ffn.fc2.weight.shape == (64, h) for b in m.blocks)
    assert sum(p.numel() for p in m.parameters()) < sum(p.numel() for p in var.parameters())
    dense = var_flops(var.cfg).transformer
    got = var_flops(m.cfg).transformer
    assert got <= target * dense * (1 + 1e-9) and got >= target * dense * 0.99
    assert res.info["fraction"] == pytest.approx(got / dense)
    assert m.cfg.mlp_ratio == h / 64


def test_ratio_one_equals_dense():
    var = tiny_var()
    m = prune(var, PruneConfig(method="magnitude", flops_target=1.0)).model
    sd, ref = m.state_dict(), var.state_dict()
    assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in ref)
    lab, x = calib(var)
    with torch.no_grad():
        assert torch.equal(m(lab, x), var(lab, x))


def _dead_giant(var, b=0, j=5):
    """Neuron j of block b: huge weights, but a bias so negative it never fires (GELU output 0)."""
    f = var.blocks[b].ffn
    with torch.no_grad():
        f.fc1.weight[j] *= 50
        f.fc1.bias[j] = -1e5
        f.fc2.weight[:, j] *= 50
    return j


def test_wanda_prunes_a_huge_but_silent_neuron_first():
    var = tiny_var()
    j = _dead_giant(var)
    stats = activation_stats(var, *calib(var))
    assert stats.norms()[0][j] == 0
    H = var.blocks[0].ffn.fc1.out_features
    mag, wan = neuron_scores(var, "magnitude")[0], neuron_scores(var, "wanda", stats)[0]
    assert mag.argmax() == j and wan.argmin() == j
    assert j in select_neurons([mag], H - 1)[0] and j not in select_neurons([wan], H - 1)[0]
    m = prune(var, PruneConfig(method="wanda", flops_target=0.9), calib=calib(var)).model
    assert m.blocks[0].ffn.fc1.weight.abs().max() < var.blocks[0].ffn.fc1.weight[j].abs().max() / 10


def test_bias_compensation_keeps_a_constant_neuron_exactly():
    var = tiny_var()
    with torch.no_grad():  # neuron 3 of every block outputs the constant gelu(1.0), whatever the token
        for blk in var.blocks:
            blk.ffn.fc1.weight[3].zero_()
            blk.ffn.fc1.bias[3] = 1.0
    lab, x = calib(var)
    stats = activation_stats(var, lab, x)
    H = var.blocks[0].ffn.fc1.out_features
    keep = [torch.arange(H)[torch.arange(H) != 3]] * len(var.blocks)
    with torch.no_grad():
        ref = var(lab, x)
        assert (prune_neurons(var, keep, stats.means())(lab, x) - ref).abs().max() < 1e-5
        assert (prune_neurons(var, keep)(lab, x) - ref).abs().max() > 1e-3
    with pytest.raises(Exception, match="same size"):  # one width for every block
        prune_neurons(var, [torch.arange(H), keep[1]])


def test_saved_model_is_official_format(tmp_path):
    var = tiny_var()
    res = prune(var, PruneConfig(method="magnitude", flops_target=0.7))
    out = save_pruned(res.model, res.info, tmp_path / "m", source={"spec": "tiny"})
    assert sorted(p.name for p in out.iterdir()) == ["prune.json", "var.pth"]
    again = load_var(out / "var.pth")
    lab, x = calib(var)
    with torch.no_grad():
        assert torch.equal(again(lab, x), res.model(lab, x))
    m2, info = load_pruned(out)
    assert info["method"] == "magnitude" and info["hidden"] == again.blocks[0].ffn.fc1.out_features
    with pytest.raises(Exception, match="exists"):
        save_pruned(res.model, res.info, out)
    save_pruned(res.model, res.info, out, force=True)
