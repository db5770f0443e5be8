"""benchmarks/compare_study.py: one budget of the study = the commands it prints (dry run, nothing trained)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent


def test_dry_run_lists_every_row_with_the_same_budget(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_study.py"),
                          str(ROOT / "recipes" / "testbed_digits.yaml"), "--flops-target", "0.6", "--out",
                          str(tmp_path / "s"), "--tokens", "--tokens-only", "--keep-granularity", "block", "--dry-run"],
                         capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout.splitlines()
    assert sum(line.startswith("$ varcompress distill") for line in out) == 3
    prunes = [line for line in out if line.startswith("$ varcompress prune")]
    assert len(prunes) == 8 and sum("--finetune" in line for line in prunes) == 7  # + FastVAR training-free
    assert all(f"--finetune {tmp_path / 's' / 'act.yaml'}" in line for line in prunes if "--finetune" in line)
    assert out[-1].startswith("$ varcompress compare") and "--dataset digits" in out[-1]
    tokens = (tmp_path / "s" / "act_tokens.yaml").read_text()
    assert tokens.count("sparse_scales: 3") == 1 and tokens.count("keep_granularity: block") == 1
    assert "keep_granularity" not in (tmp_path / "s" / "act.yaml").read_text()
    dual, only = (yaml.safe_load((tmp_path / "s" / f"{n}.yaml").read_text()) for n in ("act_tokens", "tokens_only"))
    assert only["student"]["convert"]["experts"] == 1 and dual["student"]["convert"]["experts"] == 16
    # the token students differ only in the FFN: same token settings, stages, data and seeds
    for key in ("sparse_scales", "selector", "reconstruction", "keep_granularity", "flops_target"):
        assert only["student"]["convert"][key] == dual["student"]["convert"][key]
    assert only["stages"] == dual["stages"] and only["data"] == dual["data"]
    assert {k: v for k, v in only["run"].items() if k != "out_dir"} == \
        {k: v for k, v in dual["run"].items() if k != "out_dir"}
    assert "tokens only distilled=" in out[-1]
