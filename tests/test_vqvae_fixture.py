"""Our VQVAE against outputs computed by the official VAR code (skips without ../shared)."""
from __future__ import annotations

import json

import pytest
import torch

from varcompress.vae_io import load_vae

TOL = 1e-4


@pytest.fixture(scope="module")
def vae(official_dir):
    return load_vae(official_dir / "tiny_d2_vae.pth")


@pytest.fixture(scope="module")
def ref_idx(official_reference) -> list[torch.Tensor]:
    return [official_reference[f"idx_scale{i}"] for i in range(10)]


def test_config_inferred_from_official_file(vae, official_dir):
    meta = json.loads((official_dir / "tiny_d2_meta.json").read_text())
    cfg = vae.cfg
    assert (cfg.ch, cfg.vocab_size, cfg.z_channels) == (meta["vae_ch"], meta["vocab_size"], meta["z_channels"])
    assert cfg.ch_mult == (1, 1, 2, 2, 4) and cfg.num_res_blocks == 2 and cfg.share_quant_resi == 4
    assert vae.patch_nums == tuple(meta["patch_nums"])
    assert not vae.training
    official = torch.load(official_dir / "tiny_d2_vae.pth", map_location="cpu", weights_only=True)
    assert list(vae.state_dict()) == list(official)  # same keys, same order


def test_img_to_idxBl_exact(vae, official_reference, ref_idx):
    idx = vae.img_to_idxBl(official_reference["image"])
    assert len(idx) == len(ref_idx)
    for si, (ours, theirs) in enumerate(zip(idx, ref_idx)):
        assert ours.dtype == torch.int64 and ours.shape == theirs.shape, si
        assert torch.equal(ours, theirs), f"scale {si}: {(ours != theirs).sum().item()} tokens differ"


def test_idxBl_to_var_input(vae, official_reference, ref_idx):
    x = vae.idxBl_to_var_input(ref_idx)
    want = official_reference["x_BLCv_wo_first_l"]
    assert x.shape == want.shape
    assert (x - want).abs().max().item() <= TOL


def test_idxBl_to_img_last_one(vae, official_reference, ref_idx):
    img = vae.idxBl_to_img(ref_idx, same_shape=True, last_one=True)
    want = official_reference["recon_image"]
    assert img.shape == want.shape
    assert (img - want).abs().max().item() <= TOL
    # The per-scale list mode shares the decoder; compare its f_hats instead of decoding 10 images.
    f_hats = vae.quantize.idxBl_to_fhat(ref_idx, same_shape=True, last_one=False)
    assert len(f_hats) == 10
    assert torch.equal(f_hats[-1], vae.quantize.idxBl_to_fhat(ref_idx, same_shape=True, last_one=True))


def test_sampler_step_rebuilds_var_input(vae, official_reference, ref_idx):
    """get_next_autoregressive_input, fed the reference tokens, gives the teacher-forcing input."""
    q, SN, C = vae.quantize, len(vae.patch_nums), vae.Cvae
    B, HW = ref_idx[0].shape[0], vae.patch_nums[-1]
    f_hat, nexts = torch.zeros(B, C, HW, HW), []
    with torch.no_grad():
        for si, pn in enumerate(vae.patch_nums):
            h = q.embedding(ref_idx[si]).transpose(1, 2).reshape(B, C, pn, pn)
            f_hat, nxt = q.get_next_autoregressive_input(si, SN, f_hat, h)
            if si != SN - 1:
                nexts.append(nxt.view(B, C, -1).transpose(1, 2))
        x = torch.cat(nexts, 1)
        img = vae.fhat_to_img(f_hat)
    assert (x - official_reference["x_BLCv_wo_first_l"]).abs().max().item() <= TOL
    assert (img - official_reference["recon_image"]).abs().max().item() <= TOL
