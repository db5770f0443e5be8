"""`varcompress prune` on the shipped digits teacher: official-format output, --match another model's FLOPs."""
from __future__ import annotations

import json

import pytest

from varcompress import load_var
from varcompress.cli import main
from varcompress.compare import Entry, load_model


def test_prune_cli_and_match(tmp_path, capsys):
    a, b = tmp_path / "mag", tmp_path / "tok"
    assert main(["prune", "digits", "--method", "magnitude", "--flops-target", "0.8", "--out", str(a),
                 "--threads", "1"]) == 0
    var = load_var(a / "var.pth")  # a plain official-format checkpoint
    assert var.cfg.mlp_ratio < 4.0
    info = json.loads((a / "prune.json").read_text())
    assert info["source"]["spec"] == "digits" and info["fraction"] == pytest.approx(0.8, abs=0.008)
    assert main(["prune", "digits", "--method", "tokens", "--match", str(a), "--out", str(b), "--calib-samples", "8",
                 "--reconstruction", "identity"]) == 0
    tok = json.loads((b / "prune.json").read_text())
    assert tok["source"]["match"] == str(a) and abs(tok["gflops"] / info["gflops"] - 1) <= 0.01
    m = load_model(Entry("t", str(b)), dataset="digits")
    assert m.kind == "pruned" and m.var.blocks[0].reconstruction == "identity" and m.var.vae is not None
    assert "matching" in capsys.readouterr().err
