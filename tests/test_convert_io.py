"""save_activated / load_activated: exact round trip, atomic, refuses to overwrite."""
from __future__ import annotations

import json

import pytest
import torch

from varcompress.convert import ConvertConfig, convert, load_activated, save_activated
from varcompress.errors import VarcompressError

from .helpers import tiny_var


@pytest.fixture(scope="module")
def activated():
    var = tiny_var(0)
    calib = (torch.randint(0, 10, (8,)), torch.randn(8, var.L - 1, var.Cvae))
    cfg = ConvertConfig(experts=4, top_k=2, shared_experts=1, keep_ratio=[1.0, 1.0, 0.5, 0.5],
                        router="mlp", router_steps=20, calib_tokens=256, skipped_kv="computed")
    return convert(var, cfg, calib=calib), calib


def test_round_trip_gives_identical_logits(tmp_path, activated):
    act, (labels, x) = activated
    out = save_activated(act, tmp_path / "act", source_sha256="ab" * 32)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["source_sha256"] == "ab" * 32 and cfg["convert_config"]["router"] == "mlp"
    loaded = load_activated(out)
    with torch.no_grad():
        assert torch.equal(loaded(labels, x), act(labels, x))
    assert torch.equal(loaded.blocks[1].expert_ffns()[0].perm, act.blocks[1].expert_ffns()[0].perm)
    assert loaded.budget() == act.budget() and loaded.blocks[0].skipped_kv == "computed"


def test_refuses_overwrite_without_force(tmp_path, activated):
    act, _ = activated
    save_activated(act, tmp_path / "act")
    with pytest.raises(VarcompressError, match="exists"):
        save_activated(act, tmp_path / "act")
    save_activated(act, tmp_path / "act", force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["act"]  # no temp or old directories left


def test_load_errors(tmp_path, activated):
    act, _ = activated
    with pytest.raises(VarcompressError, match="not an activated-model directory"):
        load_activated(tmp_path / "nope")
    out = save_activated(act, tmp_path / "act")
    cfg = json.loads((out / "config.json").read_text())
    cfg["convert_config"]["experts"] = 8
    cfg["convert_config"]["top_k"] = 2
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VarcompressError, match="weights do not match config.json|has shape"):
        load_activated(out)
