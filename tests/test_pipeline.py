"""The demo pipeline (convert -> distill -> baselines -> compare -> export) on the digits teacher, tiny budget."""
from __future__ import annotations

import json

import pytest

import varcompress
from varcompress.errors import VarcompressError
from varcompress.export import read_export_config
from varcompress.pipeline import PipelineConfig, run_pipeline


def test_pipeline_writes_table_pictures_and_a_loadable_export(tmp_path, monkeypatch):
    monkeypatch.setenv("VARCOMPRESS_CACHE", str(tmp_path / "cache"))
    cfg = PipelineConfig(flops_target=0.6, align_steps=2, joint_steps=2, data_count=32, n_per_class=2,
                         latency_rounds=1)
    summary = run_pipeline(cfg, tmp_path / "demo", log=lambda s: None)
    rows = {r["method"]: r for r in summary["rows"]}
    assert len(rows) == 6 and rows["teacher (digits)"]["kl"] == 0.0
    student = rows["activated + distill"]
    assert rows["activated (converted, no distillation)"]["training"]["free"] is True
    assert [(s["groups"], s["steps"]) for s in student["training"]["stages"]] == [(["routers"], 2), (["all"], 2)]
    for name in ("Wanda FFN pruning + fine-tune", "training-free token pruning (residual) + fine-tune",
                 "FastVAR-style cached token pruning + fine-tune"):
        # every baseline at the student's FLOPs (within 1%), fine-tuned with its budget: same groups, seeds
        assert rows[name]["gflops"] == pytest.approx(student["gflops"], rel=0.01)
        t = rows[name]["training"]
        assert t["stages"] == [{"name": "finetune", "groups": ["all"], "steps": 4}]
        assert t["seeds"] == student["training"]["seeds"]
    assert student["flops_reduction"] >= 0.39
    out = tmp_path / "demo" / "compare"
    assert (out / "table.md").read_text().count("\n|") >= 6 and (out / "pareto.png").stat().st_size > 0
    assert len(list((out / "grids").glob("*.png"))) == 5 and (out / "pareto_latency.png").stat().st_size > 0
    report = json.loads((out / "report.json").read_text())
    assert [r["method"] for r in report["rows"]] == list(rows)
    for m in ("wanda", "residual-tokens", "fastvar"):
        info = json.loads((tmp_path / "demo" / "baselines" / m / "prune.json").read_text())
        assert info["finetune"]["steps"] == 4  # align + joint steps of the student's recipe
    cfg_json = read_export_config(tmp_path / "demo" / "export")
    assert cfg_json["kind"] == "activated" and cfg_json["recipe"]["stages"][1]["steps"] == 2
    assert varcompress.load(tmp_path / "demo" / "export").budget()["fraction"] <= 0.6


@pytest.mark.parametrize("kw,message", [
    (dict(dataset="mnist"), "unknown dataset 'mnist'"),
    (dict(flops_target=1.0), "flops-target"),
    (dict(joint_steps=0), "--joint-steps must be >= 1"),
    (dict(n_per_class=1), "--n-per-class must be >= 2"),
])
def test_pipeline_config_rejects_bad_values(kw, message):
    with pytest.raises(VarcompressError, match=message):
        PipelineConfig(**kw).check()
