"""All experts on + every token kept = the dense model (tiny random model and the official fixture)."""
from __future__ import annotations

import pytest
import torch

from varcompress import load_vae, load_var
from varcompress.activated.token_path import flat_positions, scale_spans, select_scales
from varcompress.convert import ConvertConfig, convert
from varcompress.models.vqvae import VQVAE, VQVAEConfig

from .helpers import tiny_var


def tiny_pair(seed: int = 0):
    torch.manual_seed(seed)
    vae = VQVAE(VQVAEConfig(vocab_size=32, z_channels=8, ch=32, ch_mult=(1, 2), patch_nums=(1, 2, 3, 4))).eval()
    return tiny_var(seed).attach_vae(vae), vae


def greedy_tokens(model, labels, cfg=1.5):
    _, idx = model.autoregressive_infer_cfg(len(labels), torch.tensor(labels), g_seed=0, cfg=cfg, top_k=1,
                                            return_idx=True)
    return idx


@pytest.mark.parametrize("clustering", ["kmeans", "coact"])
def test_dense_equivalence_tiny(clustering):
    var, vae = tiny_pair()
    labels, x = torch.randint(0, 10, (8,)), torch.randn(8, var.L - 1, var.Cvae)
    act = convert(var, ConvertConfig(experts=4, top_k=4, clustering=clustering, calib_tokens=512), calib=(labels, x))
    with torch.no_grad():
        assert (act(labels, x) - var(labels, x)).abs().max().item() <= 1e-5
    lab = [1, 5, 7]
    a, b = greedy_tokens(var, lab), greedy_tokens(act, lab)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert act.budget()["fraction"] == pytest.approx(1.0)


@pytest.mark.parametrize("skipped_kv", ["none", "computed"])
def test_kept_tokens_see_skipped_ones_only_when_they_write_kv(skipped_kv):
    """First block, dense FFN, half the tokens of the last two scales skipped: with computed K/V a
    kept token attends to exactly what it attends to in the dense block, so its output is the
    dense one; without, it loses the skipped keys and differs."""
    var, _ = tiny_pair()
    labels, x = torch.randint(0, 10, (4,)), torch.randn(4, var.L - 1, var.Cvae)
    act = convert(var, ConvertConfig(experts=4, top_k=None, keep_ratio=0.5, sparse_scales=2, skipped_kv=skipped_kv,
                                     calib_tokens=512), calib=(labels, x))
    h, cond = var.embed_inputs(labels, x)
    S, blk = len(var.patch_nums), act.blocks[0]
    with torch.no_grad():
        dense = var.blocks[0](h, cond, var.attn_bias_for_masking, (0, S))
        y = blk(h, cond, var.attn_bias_for_masking, (0, S))
    kept = select_scales(blk.selector, h, blk.patch_nums, 0, S, blk.keep_counts, None)
    pos = flat_positions(kept, scale_spans(blk.patch_nums, 0, S))
    last = pos >= sum(p * p for p in var.patch_nums[:-2])   # kept tokens of the sparse scales
    err = (y - dense).abs().amax(-1).gather(1, pos)
    assert int(last.sum()) > 0
    if skipped_kv == "computed":
        assert err.max().item() <= 1e-5
    else:
        assert err[~last].max().item() <= 1e-5 and err[last].min().item() > 1e-4


def test_teacher_is_untouched_and_weights_not_shared():
    var, _ = tiny_pair()
    before = {k: v.clone() for k, v in var.state_dict().items()}
    act = convert(var, ConvertConfig(experts=4, top_k=2, keep_ratio=0.5), calib=(torch.arange(4), torch.randn(4, 29, 8)))
    assert type(var.blocks[0]).__name__ == "AdaLNSelfAttn"
    assert all(torch.equal(before[k], v) for k, v in var.state_dict().items())
    ptrs = {p.data_ptr() for p in var.parameters()}
    assert not any(p.data_ptr() in ptrs for p in act.parameters())


def test_dense_equivalence_official_fixture(official_dir):
    vae = load_vae(official_dir / "tiny_d2_vae.pth")
    var = load_var(official_dir / "tiny_d2_var.pth", vae=vae)
    act = convert(var, ConvertConfig(calib_samples=2, calib_tokens=1024))  # draws its own calibration
    lab = [11, 80]
    a, b = greedy_tokens(var, lab), greedy_tokens(act, lab)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    x = vae.idxBl_to_var_input(a)
    with torch.no_grad():
        assert (act(torch.tensor(lab), x) - var(torch.tensor(lab), x)).abs().max().item() <= 1e-5
