"""`compare` end to end on tiny models: table / CSV / JSON (schema-valid) / PNGs, atomic, no silent overwrite."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from PIL import Image

from varcompress.checkpoint import save_state_dict
from varcompress.cli import main
from varcompress.compare import CompareOptions, compare, parse_spec, validate_report
from varcompress.compare.report import CSV_FIELDS
from varcompress.models.vqvae import VQVAE, VQVAEConfig
from varcompress.prune import PruneConfig, prune, save_pruned

from .helpers import tiny_var

PN = (1, 2, 3, 4)
FAST = dict(n_per_class=2, teacher_maps=4, same_seed=2, grid_per_class=2, batches=[2], rounds=1, warmup=0, seeds=[0, 1])


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    torch.manual_seed(0)
    vae = VQVAE(VQVAEConfig(vocab_size=32, z_channels=8, ch=32, ch_mult=(1, 2), patch_nums=PN)).eval()
    var = tiny_var(num_classes=3).attach_vae(vae)
    save_state_dict(var.state_dict(), d / "teacher.pth")
    save_state_dict(vae.state_dict(), d / "vae.pth")
    g = torch.Generator().manual_seed(0)
    calib = (torch.randint(0, 3, (4,), generator=g), torch.randn(4, var.L - 1, 8, generator=g))
    for name, cfg in {"mag": PruneConfig(method="magnitude", flops_target=0.7),
                      "tok": PruneConfig(method="residual-tokens", keep_ratio=[1, 1, 0.6, 0.5])}.items():
        r = prune(var, cfg, calib=calib)
        save_pruned(r.model, r.info, d / name)
    return d


def run(d, out, only_mag=False, **kw):
    entries = [parse_spec(str(d / "mag")), parse_spec(f"tokens=  {d / 'tok'}"),
               parse_spec(f"dense={d / 'teacher.pth'}")][:1 if only_mag else 3]
    return compare(entries, out, teacher=str(d / "teacher.pth"), vae_path=str(d / "vae.pth"),
                   opts=CompareOptions(**FAST), log=lambda m: None, **kw)


def test_compare_writes_everything(tiny_files, tmp_path):
    out = tmp_path / "cmp"
    rep = run(tiny_files, out)
    assert sorted(p.name for p in out.iterdir()) == ["grids", "pareto.png", "pareto_latency.png", "report.json",
                                                     "table.csv", "table.md"]
    on_disk = json.loads((out / "report.json").read_text())
    validate_report(on_disk)
    teacher = f"teacher ({tiny_files / 'teacher.pth'})"
    assert [r["method"] for r in on_disk["rows"]] == [teacher, "mag", "tokens", "dense"]
    t, mag, tok, dense = on_disk["rows"]
    assert t["kind"] == "teacher" and mag["kind"] == tok["kind"] == "pruned" and dense["kind"] == "dense"
    assert mag["params_total"] < t["params_total"] and mag["params_active_per_token"] < t["params_active_per_token"]
    assert tok["params_total"] >= t["params_total"] and tok["params_active_per_token"] < t["params_active_per_token"]
    assert mag["flops_fraction"] == pytest.approx(0.7, abs=0.01) and tok["flops_reduction"] > 0
    assert dense["kl"] == pytest.approx(0.0, abs=1e-6) and dense["top1"] == 1.0
    assert all(r["accuracy"] is None and r["latency_s"] > 0 for r in on_disk["rows"])  # no testbed data set
    assert all(r["engine_latency_s"] > 0 and r["engine_throughput_img_s"] > 0 for r in on_disk["rows"])
    assert all(x["cpu_s"] > 0 and len(x["wall_all"]) == 1 for r in on_disk["rows"] for x in r["timing"])
    assert [(x["path"], x["batch"]) for x in t["timing"]] == [("eager", 2), ("engine", 2)]
    assert t["training"]["summary"].startswith("teacher") and mag["training"]["free"] is True
    assert dense["training"]["free"] is None  # a bare .pth: no training record
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert list(rows[0].keys())[:len(CSV_FIELDS)] == list(CSV_FIELDS) and len(rows) == 4
    md = (out / "table.md").read_text()
    assert md.count("\n| ") == 5 and "| mag |" in md
    for name in ("mag", "tokens", "dense"):
        im = Image.open(out / "grids" / f"{name}.png")
        assert im.format == "PNG" and im.size[0] > im.size[1]  # teacher | model, 2 columns each, 3 rows
    assert Image.open(out / "pareto.png").format == "PNG"
    assert rep["files"]["grids"] == {"mag": "grids/mag.png", "tokens": "grids/tokens.png", "dense": "grids/dense.png"}


def test_compare_refuses_to_overwrite(tiny_files, tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(Exception, match="exists"):
        run(tiny_files, out)
    assert (out / "keep.txt").read_text() == "mine"
    run(tiny_files, out, only_mag=True, force=True)  # one model: every timing job is a fresh process
    assert not (out / "keep.txt").exists() and (out / "report.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_compare_on_the_digits_testbed(tmp_path):
    """Testbed metrics, side-by-side grids (teacher | model) and the CLI on the shipped teacher."""
    from varcompress.testbed.teachers import load_teacher

    var, _ = load_teacher("digits")
    r = prune(var, PruneConfig(method="magnitude", flops_target=0.8))
    save_pruned(r.model, r.info, tmp_path / "mag80")
    out = tmp_path / "out"
    rc = main(["compare", f"mag={tmp_path / 'mag80'}", "--dataset", "digits", "--out", str(out), "--n-per-class", "2",
               "--batch", "2", "--repeats", "1", "--threads", "1", "--sample-seed", "0", "--sample-seed", "1"])
    assert rc == 0
    rep = validate_report(json.loads((out / "report.json").read_text()))
    t, m = rep["rows"]
    assert 0 <= m["accuracy"] <= 1 and m["fid"] > 0 and t["accuracy"] is not None
    assert m["fid_std"] is not None and len(m["details"]["quality_per_seed"]["fid"]) == 2
    assert m["fid"] == pytest.approx(sum(m["details"]["quality_per_seed"]["fid"]) / 2)
    assert m["flops_fraction"] == pytest.approx(0.8, abs=0.008)
    grid = Image.open(out / m["grid"])
    assert grid.size[1] == 14 + 10 * (2 * 32 + 2) + 2  # title strip + a row per class
    assert main(["compare", f"mag={tmp_path / 'mag80'}", "--dataset", "digits", "--out", str(out)]) == 2
