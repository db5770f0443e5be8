"""Bad inputs to `prune` (API and CLI) are one-line VarcompressErrors / exit code 2, before any work."""
from __future__ import annotations

import pytest
import torch

from varcompress.cli import main
from varcompress.convert import ConvertConfig, convert
from varcompress.errors import VarcompressError
from varcompress.prune import PruneConfig, load_pruned, prune

from .helpers import tiny_var


@pytest.mark.parametrize("kw,msg", [
    (dict(method="l1"), "method must be one of"),
    (dict(flops_target=0), "flops_target"),
    (dict(flops_target=1.5), "flops_target"),
    (dict(flops_target=True), "flops_target"),
    (dict(method="magnitude", keep_ratio=[1.0]), "keep_ratio only applies"),
    (dict(method="tokens", keep_ratio=[1.0, 0.0]), "keep_ratio"),
    (dict(token_share=1.0), "token_share"),
    (dict(sparse_scales=0), "sparse_scales"),
    (dict(reconstruction="copy"), "reconstruction"),
    (dict(compensate="yes"), "compensate"),
])
def test_bad_config(kw, msg):
    with pytest.raises(VarcompressError, match=msg) as e:
        PruneConfig(**kw)
    assert "\n" not in str(e.value)


def test_unknown_field():
    with pytest.raises(VarcompressError, match="unknown field"):
        PruneConfig.from_dict({"method": "wanda", "ratio": 0.5})


def test_unreachable_targets_and_wrong_models():
    var = tiny_var()
    calib = (torch.arange(4) % 10, torch.randn(4, var.L - 1, var.Cvae))
    with pytest.raises(VarcompressError, match="below what neuron pruning can reach"):
        prune(var, PruneConfig(method="magnitude", flops_target=0.05))
    with pytest.raises(VarcompressError, match="below what token pruning"):
        prune(var, PruneConfig(method="tokens", flops_target=0.1), calib=calib)
    with pytest.raises(VarcompressError, match="keep_ratio has 2 entries"):
        prune(var, PruneConfig(method="tokens", keep_ratio=[1.0, 0.5]), calib=calib)
    act = convert(var, ConvertConfig(experts=4, top_k=2), calib=calib)
    with pytest.raises(VarcompressError, match="needs a dense VAR"):
        prune(act, PruneConfig(method="magnitude"))
    with pytest.raises(VarcompressError, match="needs the VQVAE"):
        prune(var, PruneConfig(method="wanda"))  # no calib given and no VQVAE to draw it


def test_load_errors(tmp_path):
    with pytest.raises(VarcompressError, match="no prune.json"):
        load_pruned(tmp_path)
    (tmp_path / "prune.json").write_text("{not json")
    with pytest.raises(VarcompressError, match="invalid JSON"):
        load_pruned(tmp_path)
    (tmp_path / "prune.json").write_text('{"format": "other"}')
    with pytest.raises(VarcompressError, match="not a varcompress pruned model"):
        load_pruned(tmp_path)


@pytest.mark.parametrize("args,msg", [
    (["digits", "--method", "l1", "--flops-target", "0.7"], "method must be one of"),
    (["digits", "--method", "wanda", "--flops-target", "1.7"], "flops_target"),
    (["digits", "--method", "wanda"], "exactly one of --flops-target"),
    (["digits", "--method", "wanda", "--flops-target", "0.7", "--match", "x"], "exactly one of"),
    (["nothere.pth", "--method", "wanda", "--flops-target", "0.7"], "no such file"),
    (["digits", "--method", "wanda", "--match", "no/such/dir"], "no such file or directory"),
    (["digits", "--method", "wanda", "--flops-target", "0.7", "--finetune", "none.yaml"], "none.yaml: no such file"),
    (["digits", "--method", "magnitude", "--flops-target", "0.02"], "below what neuron pruning can reach"),
])
def test_cli_errors_are_one_line(args, msg, tmp_path, capsys):
    rc = main(["prune", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and msg in err and "\n" not in err and err.startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_cli_refuses_existing_out(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    out = str(tmp_path / "out")
    assert main(["prune", "digits", "--method", "magnitude", "--flops-target", "0.7", "--out", out]) == 2
    assert "exists (use --force" in capsys.readouterr().err
