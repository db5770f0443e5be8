"""The command line: help, version, inspect, convert, eval; bad input is one line and exit 2."""
from __future__ import annotations

import json

import pytest

import varcompress
import varcompress.testbed
from varcompress.cli import main


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version_and_help(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"varcompress {varcompress.__version__}"
    code, out, _ = run(capsys, "--help")
    for verb in ("convert", "distill", "inspect", "eval", "demo", "testbed"):
        assert verb in out


def test_inspect_official_architecture(capsys):
    code, out, _ = run(capsys, "inspect", "--arch", "d30")
    assert code == 0 and "2,010,020,356" in out and "3790.1" in out


@pytest.mark.parametrize("args,message", [
    (("inspect", "/no/such.pth"), "no such file"),
    (("inspect", "--arch", "d17"), "expected one of"),
    (("convert", "digits", "--out", "OUT", "--experts", "7"), "does not divide"),
    (("convert", "digits", "--out", "OUT", "--keep-ratio", "1.5"), "keep_ratio"),
    (("convert", "digits", "--out", "OUT", "--keep-ratio", "half"), "expected a number"),
    (("convert", "digits", "--out", "OUT", "--flops-target", "0"), "flops_target"),
    (("eval", "digits", "--n-per-class", "1"), "n-per-class"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, message):
    args = tuple(str(tmp_path / "out") if a == "OUT" else a for a in args)
    code, out, err = run(capsys, *args)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_convert_writes_a_loadable_model_and_refuses_to_overwrite(capsys, tmp_path):
    out = tmp_path / "act"
    code, text, err = run(capsys, "convert", "--out", str(out), "--experts", "4", "--top-k", "2",
                          "--keep-ratio", "0.5", "--calib-samples", "4")
    assert code == 0, err
    assert "total GF" in text
    config = json.loads((out / "config.json").read_text())
    assert config["source"]["testbed"] == "digits" and len(config["source_sha256"]) == 64
    assert config["budget"]["fraction"] < 1.0
    _, vae = varcompress.testbed.load_teacher("digits")
    model = varcompress.load(out, vae=vae)
    assert model.autoregressive_infer_cfg(B=2, label_B=3, g_seed=0).shape == (2, 3, 32, 32)
    code, _, err = run(capsys, "convert", "--out", str(out), "--experts", "4", "--calib-samples", "4")
    assert code == 2 and "exists" in err


def test_convert_without_out_writes_name_activated_in_the_current_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, text, err = run(capsys, "convert", "digits", "--top-k", "4", "--calib-samples", "4")
    assert code == 0, err
    assert (tmp_path / "digits-activated" / "config.json").is_file() and "digits-activated" in text
    code, _, err = run(capsys, "convert", "digits")
    assert code == 2 and "digits-activated: exists" in err
