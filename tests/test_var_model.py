"""The VAR transformer: official shapes, exact fixture logits, both attention variants."""
from __future__ import annotations

import json

import pytest
import torch

from varcompress.models.var import VARConfig
from varcompress.var_io import build_var, infer_var_config, var_from_state_dict

from .helpers import tiny_var

OFFICIAL_PARAMS = {16: 310_283_520, 20: 600_917_136, 24: 1_033_399_360, 30: 2_010_020_356}


@pytest.mark.parametrize("depth", sorted(OFFICIAL_PARAMS))
def test_full_size_meta_build_has_official_parameter_count(depth):
    model = build_var(VARConfig.official(depth), device="meta")
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[depth]


@pytest.mark.parametrize("depth", [16, 20, 24, 30])
def test_full_size_keys_and_shapes_match_manifest(official_dir, depth):
    manifest = json.loads((official_dir / "official_state_dict_manifest.json").read_text())[f"var_d{depth}"]
    sd = build_var(VARConfig.official(depth, attn_l2_norm="blocks.0.attn.scale_mul_1H11" in manifest),
                   device="meta").state_dict()
    expected = {}
    for k, (shape, _dtype) in ((k, v) for k, v in manifest.items() if not k.startswith("__")):
        names = [k.replace("blocks.0.", f"blocks.{i}.") for i in range(depth)] if k.startswith("blocks.0.") else [k]
        expected.update({n: list(shape) for n in names})
    assert {k: list(v.shape) for k, v in sd.items()} == expected


def test_fixture_logits_match_official(official_dir, official_reference):
    r = official_reference
    sd = torch.load(official_dir / "tiny_d2_var.pth", weights_only=True)
    model = var_from_state_dict(sd)
    assert model.cfg.attn_l2_norm and model.cfg.depth == 2 and model.cfg.vocab_size == 512
    with torch.no_grad():
        logits = model(r["labels"], r["x_BLCv_wo_first_l"])
    assert (logits - r["logits"]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("l2", [True, False])
def test_config_inference_round_trip(l2):
    model = tiny_var(attn_l2_norm=l2, num_heads=1 if not l2 else 2, embed_dim=64)
    cfg = infer_var_config(model.state_dict())
    assert cfg.attn_l2_norm is l2
    assert cfg.depth == 2 and cfg.embed_dim == 64 and cfg.patch_nums == (1, 2, 3, 4)
    assert cfg.vocab_size == 32 and cfg.Cvae == 8 and cfg.num_classes == 10
    assert cfg.num_heads == (2 if l2 else 1)  # without scale_mul: 64-dim heads


@pytest.mark.parametrize("l2", [True, False])
def test_teacher_forcing_is_block_causal(l2):
    """Changing the tokens of scale s must not change logits of scales <= s."""
    model = tiny_var(attn_l2_norm=l2)
    B, L = 2, model.L
    x = torch.randn(B, L - 1, model.Cvae)
    labels = torch.tensor([1, 7])
    base = model(labels, x)
    bg, ed = model.begin_ends[2]
    x2 = x.clone()
    x2[:, bg - 1:ed - 1] += 1.0  # input row j feeds token j+1: these are scale 2's inputs
    out = model(labels, x2)
    assert torch.equal(out[:, :bg], base[:, :bg])
    assert not torch.allclose(out[:, bg:ed], base[:, bg:ed])
