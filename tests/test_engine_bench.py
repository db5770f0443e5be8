"""`varcompress bench` runs end to end on a small model and writes JSON + Markdown."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from varcompress.cli import main
from varcompress.engine.bench import add_speedups, markdown
from varcompress.engine.bench_models import decode_gflops


def test_bench_cli_small_model(tmp_path, capsys):
    rc = main(["bench", "--model", "small", "--batch", "1", "--repeats", "1", "--budget", "k4-keep0.7",
               "--no-bf16", "--decode", "--threads", "1", "--out", str(tmp_path), "--stem", "t", "--same-process"])
    assert rc == 0
    data = json.loads((tmp_path / "t.json").read_text())
    names = {r["variant"] for r in data["rows"] if r["model"] == "small"}
    assert names == {"eager", "eager+malloc", "engine-fp32", "act[k4-keep0.7]-eager", "act[k4-keep0.7]-engine-fp32"}
    eng = next(r for r in data["rows"] if r["variant"] == "engine-fp32")
    assert set(eng["breakdown_s"]) == {"transformer", "sampling", "next_input", "decode"}
    assert eng["images_per_s"] > 0 and "speedup_vs_eager" in eng and eng["decode_gflops_per_image"] > 0
    eager = next(r for r in data["rows"] if r["variant"] == "eager")
    assert eager["breakdown_s"]["decode"] > 0 and eager["breakdown_s"]["transformer"] > 0
    act = next(r for r in data["rows"] if r["variant"] == "act[k4-keep0.7]-engine-fp32")
    assert act["fraction"] < 1 and "speedup_vs_dense_engine" in act
    assert any(r["model"] == "decode:small" for r in data["rows"])
    assert data["meta"]["device"]["device"] == "cpu" and data["meta"]["device"]["threads"] == 1
    md = (tmp_path / "t.md").read_text()
    assert "| small | engine-fp32 | 1 |" in md and "threads=1" in md
    assert torch.get_num_threads() == 1


def test_missing_teacher_is_skipped_and_unknown_budget_refused(tmp_path):
    rc = main(["bench", "--model", "small", "--budget", "nope", "--repeats", "1", "--no-bf16",
               "--out", str(tmp_path)])
    assert rc == 2


def test_decode_gflops_of_the_official_vqvae_matches_the_published_figure():
    from varcompress.models.vqvae import VQVAEConfig
    from varcompress.vae_io import build_vae

    g = decode_gflops(build_vae(VQVAEConfig(), "meta"))
    assert 380 < g < 410  # VAR_FORMAT.md: ~394 GFLOPs per image
    fast = decode_gflops(build_vae(VQVAEConfig(), "meta"), subpixel=True)
    # four upsample convs (C 640/320/320/160 at 16..128 px), each computed with 16 instead of 36 MACs per pixel
    saved = 2 * 20 * (16**2 * 640**2 + 32**2 * 320**2 + 64**2 * 320**2 + 128**2 * 160**2) / 1e9
    assert abs((g - fast) - saved) < 1e-6


def test_markdown_and_speedups():
    rows = [dict(model="m", variant="eager", batch=1, median_s=2.0, images_per_s=0.5, transformer_gflops_per_image=10.0),
            dict(model="m", variant="engine-fp32", batch=1, median_s=1.0, images_per_s=1.0,
                 transformer_gflops_per_image=10.0, breakdown_s=dict(transformer=0.5, sampling=0.1, next_input=0.1,
                                                                     decode=0.3)),
            dict(model="m", variant="act[k]-engine-fp32", batch=1, median_s=0.5, images_per_s=2.0,
                 transformer_gflops_per_image=5.0, fraction=0.5)]
    add_speedups(rows)
    assert rows[1]["speedup_vs_eager"] == 2.0 and rows[2]["speedup_vs_dense_engine"] == 2.0
    assert abs(rows[2]["wallclock_saving_over_flops_saving"] - 1.0) < 1e-9
    md = markdown(rows, dict(device=dict(name="cpu", device="cpu", threads=1), torch="x", repeats=1, warmup=0))
    assert md.count("\n| m |") == 3 and rows[2]["transformer_gflops_per_image"] == 5.0


def test_bf16_rows_are_compared_with_the_eager_path_under_bf16_autocast(tmp_path):
    """--bf16 adds the official protocol's eager call under bf16 autocast; bf16 engines get a like-for-like ratio."""
    rc = main(["bench", "--model", "small", "--batch", "1", "--repeats", "1", "--bf16", "--threads", "1",
               "--out", str(tmp_path), "--stem", "b", "--same-process"])
    assert rc == 0
    rows = {r["variant"]: r for r in json.loads((tmp_path / "b.json").read_text())["rows"]}
    assert set(rows) == {"eager", "eager+malloc", "eager-bf16", "engine-fp32", "engine-bf16"}
    assert rows["eager+malloc"]["malloc_tuned"] and not rows["eager"]["malloc_tuned"]
    assert rows["eager-bf16"]["dtype"] == "bf16-autocast" and rows["eager-bf16"]["breakdown_s"]["decode"] > 0
    assert "speedup_vs_eager_bf16" in rows["engine-bf16"] and "speedup_vs_eager_bf16" not in rows["engine-fp32"]
    assert "x eager-bf16" in (tmp_path / "b.md").read_text()


def test_cuda_graph_variants_on_cpu_are_a_clear_error(tmp_path):
    rc = main(["bench", "--model", "small", "--repeats", "1", "--no-bf16", "--cuda-graphs", "--out", str(tmp_path)])
    assert rc == 2


def test_bench_times_a_users_activated_model_beside_its_teacher(tmp_path, capsys):
    student = tmp_path / "act"
    assert main(["convert", "digits", "--out", str(student), "--top-k", "4", "--calib-samples", "4"]) == 0
    rc = main(["bench", "--model", "digits", "--student", str(student), "--batch", "1", "--repeats", "1",
               "--no-bf16", "--threads", "1", "--out", str(tmp_path), "--stem", "s", "--same-process"])
    assert rc == 0
    rows = {r["variant"]: r for r in json.loads((tmp_path / "s.json").read_text())["rows"]}
    assert {"eager", "engine-fp32", "act-eager", "act-engine-fp32"} <= set(rows)
    act = rows["act-engine-fp32"]
    assert 0.5 < act["fraction"] < 1 and act["budget"] == "act" and "speedup_vs_dense_engine" in act
    capsys.readouterr()
    assert main(["bench", "--model", "small", "--student", str(student), "--repeats", "1", "--no-bf16",
                 "--out", str(tmp_path)]) == 2
    assert "--student needs a testbed --model" in capsys.readouterr().err


def test_sampler_benchmark_script_writes_its_table(tmp_path):
    import runpy
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sampler.py"
    argv = sys.argv
    sys.argv = [str(script), "--repeats", "1", "--out", str(tmp_path), "--stem", "s"]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    data = json.loads((tmp_path / "s.json").read_text())
    assert len(data["rows"]) == 4 and all(len(r["ms"]) == 3 and min(r["ms"].values()) > 0 for r in data["rows"])
    assert "rejection (no sort)" in (tmp_path / "s.md").read_text()


def test_fresh_process_bench_on_a_tiny_model(tmp_path):
    """The default: every (variant, batch) timed in its own process, alternating rounds, fixed threads."""
    rc = main(["bench", "--model", "small", "--batch", "1", "--repeats", "2", "--warmup", "0", "--no-bf16",
               "--no-act-eager", "--threads", "1", "--out", str(tmp_path), "--stem", "f"])
    assert rc == 0
    data = json.loads((tmp_path / "f.json").read_text())
    rows = {r["variant"]: r for r in data["rows"]}
    assert set(rows) == {"eager", "eager+malloc", "engine-fp32"}
    assert data["meta"]["fresh_process"] and data["meta"]["device"]["threads"] == 1
    for r in rows.values():
        assert len(r["all_s"]) == 2 and len(r["all_cpu_s"]) == 2 and r["median_cpu_s"] > 0
    assert "speedup_vs_eager" in rows["engine-fp32"] and "cpu_speedup_vs_eager" in rows["engine-fp32"]
    assert main(["bench", "--model", "small", "--decode", "--out", str(tmp_path)]) == 2  # needs --same-process
