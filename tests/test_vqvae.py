"""VQVAE structure, config inference, loading errors and training pass (no shared fixtures needed)."""
from __future__ import annotations

import json

import pytest
import torch

from varcompress.checkpoint import save_state_dict
from varcompress.errors import VarcompressError
from varcompress.models.quantizer import phi_index
from varcompress.models.vqvae import VQVAE, VQVAEConfig
from varcompress.vae_io import build_vae, infer_vae_config, load_vae

TINY = VQVAEConfig(vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                   using_sa=False, using_mid_sa=True, share_quant_resi=4, patch_nums=(1, 2, 3, 4, 5, 6, 8))
TINY_K1 = VQVAEConfig(vocab_size=32, z_channels=4, ch=64, ch_mult=(1, 1), num_res_blocks=3,
                      using_sa=True, using_mid_sa=False, share_quant_resi=1, patch_nums=(1, 2, 4))


def _randomised(cfg: VQVAEConfig) -> VQVAE:
    """A VQVAE whose every weight (norms and biases too) is random, so every path matters."""
    vae = build_vae(cfg)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return vae.eval()


def _images(cfg: VQVAEConfig, n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, cfg.image_size, cfg.image_size) * 2 - 1


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    torch.manual_seed(1)
    vae = _randomised(TINY)
    path = tmp_path_factory.mktemp("vae") / "tiny_vae.pth"
    save_state_dict(vae.state_dict(), path)
    return vae, path


@pytest.mark.parametrize("cfg", [TINY, TINY_K1], ids=["k4", "k1"])
def test_config_inference_round_trip(cfg):
    sd = build_vae(cfg, device="meta").state_dict()
    assert infer_vae_config(sd, patch_nums=cfg.patch_nums) == cfg
    assert VQVAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_save_load_equal(tiny_file):
    vae, path = tiny_file
    loaded = load_vae(path, patch_nums=TINY.patch_nums)
    assert loaded.cfg == TINY and not loaded.training
    assert loaded.downsample_ratio == 4 and loaded.patch_nums == TINY.patch_nums
    ref = vae.state_dict()
    for k, v in loaded.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, ref[k]), k
    img = _images(TINY)
    idx, idx2 = vae.img_to_idxBl(img), loaded.img_to_idxBl(img)
    assert [t.shape[1] for t in idx] == [p * p for p in TINY.patch_nums]
    assert all(torch.equal(a, b) for a, b in zip(idx, idx2))
    assert loaded.idxBl_to_var_input(idx).shape == (2, sum(p * p for p in TINY.patch_nums[1:]), TINY.z_channels)
    recon = loaded.idxBl_to_img(idx, last_one=True)
    assert recon.shape == img.shape and recon.abs().max() <= 1
    per_scale = loaded.idxBl_to_img(idx, last_one=False)
    assert len(per_scale) == len(idx) and torch.allclose(per_scale[-1], recon, atol=1e-6)
    small = loaded.idxBl_to_img(idx, same_shape=False, last_one=True)
    assert small.shape == img.shape


def test_patch_nums_required_for_non_default_scales(tiny_file):
    _, path = tiny_file
    with pytest.raises(VarcompressError, match="pass patch_nums"):
        load_vae(path)
    with pytest.raises(VarcompressError, match="3 scales but the file has 7"):
        load_vae(path, patch_nums=(1, 2, 8))


def test_set_patch_nums_and_image_size_checks(tiny_file):
    vae, _ = tiny_file
    with pytest.raises(VarcompressError, match="7"):
        vae.set_patch_nums((1, 2, 4))
    with pytest.raises(VarcompressError, match="expected images"):
        vae.img_to_idxBl(torch.zeros(1, 3, 40, 40))
    vae.set_patch_nums((1, 2, 3, 4, 5, 6, 8))
    assert vae.cfg.patch_nums == vae.patch_nums


def test_phi_schedule():
    assert [phi_index(si, 10, 4) for si in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert [phi_index(si, 10, 1) for si in range(10)] == [0] * 10


def test_sampler_step_matches_teacher_forcing(tiny_file):
    vae, _ = tiny_file
    q, SN, C, HW = vae.quantize, len(vae.patch_nums), vae.Cvae, vae.patch_nums[-1]
    idx = vae.img_to_idxBl(_images(TINY))
    f_hat, nexts = torch.zeros(2, C, HW, HW), []
    with torch.no_grad():
        for si, pn in enumerate(vae.patch_nums):
            h = q.embedding(idx[si]).transpose(1, 2).reshape(2, C, pn, pn)
            f_hat, nxt = q.get_next_autoregressive_input(si, SN, f_hat, h)
            nexts += [nxt.flatten(2).transpose(1, 2)] if si < SN - 1 else []
    assert torch.allclose(torch.cat(nexts, 1), vae.idxBl_to_var_input(idx), atol=1e-6)
    assert torch.allclose(f_hat, q.idxBl_to_fhat(idx, last_one=True), atol=1e-6)


def test_full_size_meta_build(request):
    vae = build_vae(VQVAEConfig(), device="meta")
    sd = vae.state_dict()
    assert len(sd) == 324 and all(v.device.type == "meta" for v in sd.values())
    assert vae.downsample_ratio == 16 and vae.cfg.image_size == 256
    official_dir = request.getfixturevalue("official_dir")  # skips here without ../shared
    manifest = json.loads((official_dir / "official_state_dict_manifest.json").read_text())["vae_ch160v4096z32"]
    assert list(sd) == list(manifest)
    assert {k: list(v.shape) for k, v in sd.items()} == manifest
    n_buffers = sum(b.numel() for b in vae.buffers())
    assert sum(p.numel() for p in vae.parameters()) == sum(torch.Size(s).numel() for s in manifest.values()) - n_buffers


def test_training_forward_gives_gradients():
    vae = build_vae(TINY).train()
    img = _images(TINY)
    recon, vq_loss, usage = vae(img)
    assert recon.shape == img.shape and vq_loss.dim() == 0 and torch.isfinite(vq_loss)
    assert 0 < usage <= 100
    ((recon - img).square().mean() + vq_loss).backward()
    for name in ["encoder.conv_in.weight", "decoder.conv_out.weight", "quantize.embedding.weight",
                 "quantize.quant_resi.qresi_ls.0.weight", "quant_conv.weight", "post_quant_conv.weight"]:
        g = vae.get_parameter(name).grad
        assert g is not None and g.abs().sum() > 0, name
    assert vae.quantize.ema_vocab_hit_SV.sum() > 0  # training statistics recorded


# ---- bad files: one clear line naming the file and the offending key --------------------------

def _save_variant(tmp_path, name, mutate):
    sd = dict(build_vae(TINY).state_dict())
    mutate(sd)
    path = tmp_path / name
    save_state_dict(sd, path)
    return path


def _fails(path, *needles):
    with pytest.raises(VarcompressError) as e:
        load_vae(path, patch_nums=TINY.patch_nums)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    for n in needles:
        assert n in msg, msg


def test_missing_and_truncated_files(tmp_path, tiny_file):
    _fails(tmp_path / "nope.pth", "no such file")
    data = tiny_file[1].read_bytes()
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(data[: len(data) // 2])
    _fails(bad, "truncated")


def test_var_checkpoint_rejected(tmp_path):
    path = tmp_path / "var.pth"
    save_state_dict({"class_emb.weight": torch.zeros(1001, 8),
                     "blocks.0.attn.mat_qkv.weight": torch.zeros(24, 8)}, path)
    _fails(path, "looks like a VAR transformer checkpoint, not a VQVAE")


def test_missing_key(tmp_path):
    path = _save_variant(tmp_path, "missing.pth", lambda sd: sd.pop("decoder.up.1.block.0.conv2.bias"))
    _fails(path, "missing", "decoder.up.1.block.0.conv2.bias")
    path = _save_variant(tmp_path, "missing2.pth", lambda sd: sd.pop("encoder.down.0.block.0.conv1.weight"))
    _fails(path, "missing", "encoder.down.0.block.0.conv1.weight")


def test_unexpected_key_wrong_shape_and_nan(tmp_path):
    path = _save_variant(tmp_path, "extra.pth", lambda sd: sd.__setitem__("decoder.extra.weight", torch.zeros(2)))
    _fails(path, "unexpected", "decoder.extra.weight")
    bad_shape = torch.zeros(64, 8, 1, 1)
    path = _save_variant(tmp_path, "shape.pth", lambda sd: sd.__setitem__("decoder.conv_in.weight", bad_shape))
    _fails(path, "decoder.conv_in.weight", "(64, 8, 1, 1)", "expected (64, 8, 3, 3)")
    path = _save_variant(tmp_path, "nan.pth", lambda sd: sd["post_quant_conv.bias"].fill_(float("nan")))
    _fails(path, "post_quant_conv.bias", "NaN")
