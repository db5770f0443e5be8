"""`varcompress testbed report`: the numbers that say whether a teacher can tell methods apart."""
from __future__ import annotations

import json

import pytest
import torch

from varcompress.cli import main
from varcompress.metrics.corruptions import blur, channel_shuffle, corruption_accuracy, grey
from varcompress.testbed import load_teacher
from varcompress.testbed.report import redraw_last_scale, report_markdown, sample_with_tokens, teacher_report


def test_corruptions_remove_what_they_say():
    x = torch.rand(4, 3, 32, 32)
    g = grey(x)
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])
    assert blur(x).diff(dim=-1).abs().mean() < 0.5 * x.diff(dim=-1).abs().mean()
    assert torch.allclose(blur(torch.full_like(x, 0.3)), torch.full_like(x, 0.3))   # flat stays flat
    assert torch.equal(channel_shuffle(x)[:, 1], x[:, 0])
    acc = corruption_accuracy("digits", n=60)
    assert acc["clean"] > 0.95 and acc["blur_sigma3"] < acc["clean"] - 0.2   # heavy blur hurts digits


def test_samples_with_tokens_decode_to_the_sampled_images():
    var, vae = load_teacher("digits")
    labels = torch.arange(10).repeat_interleave(2)
    images, idx = sample_with_tokens(var, labels, seed=3, sampling=dict(cfg=1.5, top_k=0, top_p=0.0))
    direct = var.autoregressive_infer_cfg(20, labels, g_seed=3, cfg=1.5, top_k=0, top_p=0.0)
    assert torch.allclose(images, direct, atol=1e-6)
    assert [t.shape[1] for t in idx] == [p * p for p in vae.patch_nums]


def test_last_scale_redraw_is_the_samplers_last_scale_given_its_earlier_scales():
    """Teacher forcing + the sampler's CFG at the last scale = cached generation's last scale (greedy draws)."""
    var, _ = load_teacher("digits")
    labels = torch.arange(10)
    greedy = dict(cfg=1.5, top_k=1, top_p=0.0)
    _, idx = sample_with_tokens(var, labels, seed=5, sampling=greedy)
    redrawn = redraw_last_scale(var, idx, labels, greedy, seed=0)
    assert redrawn.shape == idx[-1].shape
    assert (redrawn == idx[-1]).float().mean() > 0.99          # float ties aside, the same tokens
    sampled = redraw_last_scale(var, idx, labels, dict(greedy, top_k=0), seed=0)
    assert 0.2 < (sampled == idx[-1]).float().mean() < 1.0      # full-distribution draws: close, not equal


def test_report_seeds_differ_and_later_scales_carry_detail():
    r, pictures = teacher_report("digits", n_per_class=2, seeds=(0, 1), n_real=40, progress=False)
    a, b = r["teacher"]["per_seed"]
    assert a["fid"] != b["fid"]                 # different sampling seeds, different samples
    assert r["teacher"]["fid"]["std"] > 0
    tok = r["tokenizer"]
    assert tok["all"]["psnr_db"] > tok["without_last"]["psnr_db"] > tok["without_last_two"]["psnr_db"]
    assert tok["all"]["saturation_ratio"] is None                    # digits are grey
    assert set(r["scale_ablation"]) == {"teacher", "real"}
    assert 0 <= r["scale_ablation"]["real"]["last_scale_redrawn"]["accuracy"] <= 1
    pc = r["per_class_accuracy"]
    assert len(pc["teacher"]) == len(pc["real_last_scale_redrawn"]) == len(r["class_names"]) == 10
    assert sum(pc["teacher"]) / 10 == pytest.approx(r["teacher"]["accuracy"]["mean"])   # balanced classes
    assert pictures["samples"].shape == (20, 3, 32, 32)
    md = report_markdown(r)
    assert "floor (real vs real)" in md and "without last two" in md and "grey" in md
    assert "last scale redrawn" in md and "| 7 |" in md                  # per-class rows by class name


def test_cli_report_writes_its_folder_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["testbed", "report", "digits", "--out", str(out), "--n-per-class", "2", "--seeds", "2",
                 "--n-real", "20"]) == 0
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "samples.png", "scale_ablation.png"}
    assert json.loads((out / "report.json").read_text())["n"] == 20
    capsys.readouterr()
    assert main(["testbed", "report", "digits", "--out", str(out), "--seeds", "2"]) == 2   # exists, no --force
    assert main(["testbed", "report", "digits", "--out", str(tmp_path / "x"), "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--seeds" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
    assert main(["testbed", "info", "digits"]) == 0
    printed = capsys.readouterr().out
    assert "classes: 0, 1, 2" in printed and "trained 1200 steps x 48" in printed
