"""export: one artifact for dense, activated, pruned and distilled models; `varcompress.load` rebuilds each exactly."""
from __future__ import annotations

import json

import pytest
import torch

import varcompress
from varcompress.checkpoint import read_state_dict, save_state_dict
from varcompress.cli import main
from varcompress.convert import ConvertConfig, convert, save_activated
from varcompress.distill import distill
from varcompress.errors import VarcompressError
from varcompress.export import export_model, load_export, read_export_config, vae_fingerprint
from varcompress.prune import PruneConfig, prune, save_pruned

from .helpers import tiny_var
from .test_distill_common import tiny_recipe, tiny_teacher  # noqa: F401  (fixture)
from .test_generation import tiny_vae


def _inputs(var, n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, var.num_classes, (n,), generator=g), torch.randn(n, var.L - 1, var.Cvae, generator=g)


def assert_same_logits(a, b):
    labels, x = _inputs(a)
    with torch.no_grad():
        assert torch.equal(a(labels, x), b(labels, x))


@pytest.fixture(scope="module")
def dense_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("dense")
    save_state_dict(tiny_var(0).state_dict(), d / "var.pth")
    save_state_dict(tiny_vae(0).state_dict(), d / "vae.pth")
    return d


@pytest.fixture(scope="module")
def activated_dir(tmp_path_factory):
    var = tiny_var(0)
    cfg = ConvertConfig(experts=4, top_k=2, keep_ratio=[1.0, 1.0, 0.5, 0.5], router_steps=10, calib_tokens=256)
    act = convert(var, cfg, calib=_inputs(var, 8, seed=2))
    return save_activated(act, tmp_path_factory.mktemp("act") / "act", source_sha256="cd" * 32,
                          source={"checkpoint": "var.pth", "testbed": None})


def test_dense_round_trip_is_exact_and_keeps_the_official_keys(dense_file, tmp_path):
    out = export_model(str(dense_file / "var.pth"), tmp_path / "ex", vae=dense_file / "vae.pth")
    cfg = read_export_config(out)
    assert cfg["kind"] == "dense" and cfg["budget"]["fraction"] == 1.0 and cfg["experts"] is None
    assert len(cfg["source"]["sha256"]) == 64 and cfg["vae_fingerprint"] == vae_fingerprint(tiny_vae(0))
    assert read_state_dict(out / "model.safetensors").keys() == tiny_var(0).state_dict().keys()
    loaded = varcompress.load(out)
    assert_same_logits(loaded, tiny_var(0))


def test_activated_round_trip_records_experts_permutations_and_budget(activated_dir, tmp_path):
    out = export_model(str(activated_dir), tmp_path / "ex")
    cfg = read_export_config(out)
    src = varcompress.load(activated_dir)
    loaded = varcompress.load(out)
    assert type(loaded) is type(src) and cfg["kind"] == "activated"
    assert_same_logits(loaded, src)
    sd = read_state_dict(out / "model.safetensors")
    assert [e["top_k"] for e in cfg["experts"]] == [2, 2] and all(e["experts"] == 4 for e in cfg["experts"])
    for e in cfg["experts"]:  # the card names the permutation tensors, and they are real permutations
        assert torch.equal(sd[e["permutation"]].sort().values, torch.arange(tiny_var(0).blocks[0].ffn.fc1.out_features))
    assert cfg["budget"] == json.loads(json.dumps(src.budget())) and cfg["source"]["sha256"] == "cd" * 32
    assert cfg["convert_config"]["keep_ratio"] == [1.0, 1.0, 0.5, 0.5]


def test_export_is_deterministic_and_reexport_is_identical(activated_dir, tmp_path):
    a = export_model(str(activated_dir), tmp_path / "a")
    b = export_model(str(a), tmp_path / "b")
    for name in ("model.safetensors", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_neuron_pruned_model_exports_as_a_smaller_dense_model(tmp_path):
    var = tiny_var(0)
    res = prune(var, PruneConfig(method="magnitude", flops_target=0.8))
    d = save_pruned(res.model, res.info, tmp_path / "pruned", source={"spec": "var.pth"})
    out = export_model(str(d), tmp_path / "ex")
    cfg = read_export_config(out)
    assert cfg["kind"] == "dense" and cfg["pruning"]["method"] == "magnitude"
    assert cfg["var_config"]["mlp_ratio"] < 4.0 and cfg["params"] < sum(p.numel() for p in var.parameters())
    assert_same_logits(varcompress.load(out), res.model)
    assert_same_logits(varcompress.load(d), res.model)  # the same loader reads the pruned directory itself


def test_distill_run_exports_with_its_recipe_and_metrics(tiny_teacher, tmp_path):
    run = tmp_path / "run"
    r = tiny_recipe(tiny_teacher, run, tmp_path / "cache", steps=(2, 2))
    r["eval"]["converted"] = False
    distill(r)
    out = export_model(str(run), tmp_path / "ex")
    cfg = read_export_config(out)
    assert cfg["recipe"]["stages"][0]["name"] == "align" and cfg["source"]["input"] == "distill"
    assert "distilled" in cfg["metrics"] and cfg["sampling"] == {"cfg": 1.5, "top_k": 0, "top_p": 0.0}
    vae = varcompress.load_vae(tiny_teacher["vae"], patch_nums=(1, 2, 3, 4))
    assert cfg["vae_fingerprint"] == vae_fingerprint(vae)
    assert_same_logits(varcompress.load(out), varcompress.load(run / "student"))
    student = load_export(out, vae=vae)  # with its own VQVAE it generates
    imgs = student.autoregressive_infer_cfg(2, torch.tensor([1, 2]), g_seed=0, cfg=1.5, top_k=0, top_p=0.0)
    assert imgs.shape == (2, 3, 8, 8) and imgs.min() >= 0 and imgs.max() <= 1


def test_a_different_vqvae_is_refused(dense_file, tmp_path):
    out = export_model(str(dense_file / "var.pth"), tmp_path / "ex", vae=dense_file / "vae.pth")
    with pytest.raises(VarcompressError, match="not the one this model was made with"):
        load_export(out, vae=tiny_vae(1))
    assert load_export(out, vae=tiny_vae(0)).vae is not None


def test_unfinished_distill_run_and_tampered_exports_are_refused(activated_dir, tmp_path):
    run = tmp_path / "run"
    (run / "ckpt").mkdir(parents=True)
    (run / "recipe.resolved.yaml").write_text("{}\n")
    with pytest.raises(VarcompressError, match="unfinished distill run"):
        export_model(str(run), tmp_path / "ex")
    assert not (tmp_path / "ex").exists()
    out = export_model(str(activated_dir), tmp_path / "ex")
    cfg = json.loads((out / "config.json").read_text())
    cfg["kind"] = "sparse"
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VarcompressError, match="kind must be one of"):
        varcompress.load(out)
    cfg["kind"], cfg["convert_config"]["experts"] = "activated", 8
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VarcompressError, match="has shape|missing|unexpected|divide"):
        varcompress.load(out)


def test_cli_export_testbed_teacher_then_eval_loads_it(tmp_path, capsys):
    out = tmp_path / "digits"
    assert main(["export", "digits", "--out", str(out)]) == 0
    assert "exported a dense model" in capsys.readouterr().out
    cfg = read_export_config(out)
    assert cfg["source"]["testbed"] == "digits" and cfg["sampling"]["cfg"] == 1.5
    assert main(["export", "digits", "--out", str(out)]) == 2
    assert "exists (use --force" in capsys.readouterr().err
    from varcompress.resolve import resolve_model

    m = resolve_model(str(out))  # the testbed VQVAE is found from the card and its fingerprint checked
    assert m.kind == "dense" and m.dataset == "digits" and m.vae is not None
    assert_same_logits(m.var, varcompress.testbed.load_teacher("digits")[0])
