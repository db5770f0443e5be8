"""End-to-end distillation on a tiny teacher: freezing, KL reduction, outputs, NaN stop, resume after SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from varcompress.checkpoint import read_state_dict
from varcompress.convert import load_activated
from varcompress.distill import distill, losses
from varcompress.distill.recipe import parse_recipe, read_yaml
from varcompress.distill.stages import param_groups
from varcompress.errors import VarcompressError

from .test_distill_common import tiny_recipe, tiny_teacher  # noqa: F401  (fixture)


def weights(run_dir, name="student"):
    return read_state_dict(run_dir / name / "model.safetensors")


def test_stage1_changes_only_routers_and_selectors(tiny_teacher, tmp_path):
    r = tiny_recipe(tiny_teacher, tmp_path / "run", tmp_path / "cache")
    r["stages"] = r["stages"][:1]
    r["stages"][0]["losses"] = {"kl": 1.0, "router": 0.1, "selector": 0.1, "balance": 0.01, "budget": 0.1}
    r["eval"]["converted"] = False
    distill(r)
    before, after = weights(tmp_path / "run", "student_init"), weights(tmp_path / "run")
    groups = param_groups(load_activated(tmp_path / "run" / "student"))
    gates = {n for g in ("routers", "selectors") for n, _ in groups[g]}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= gates
    assert any(".router." in k for k in changed) and any(".selector." in k for k in changed)


def test_distill_reduces_kl_and_writes_outputs(tiny_teacher, tmp_path):
    out = tmp_path / "run"
    r = tiny_recipe(tiny_teacher, out, tmp_path / "cache", steps=(6, 10), eval_every=8)
    out.mkdir()  # a run of another recipe that failed before any work: nothing to lose, taken over
    (out / "recipe.resolved.yaml").write_text("description: another recipe\n")
    res = distill(r).result
    m = res["models"]
    assert m["distilled"]["teacher_relative"]["kl"] < 0.8 * m["converted"]["teacher_relative"]["kl"]
    assert m["distilled"]["flops"]["fraction"] == m["converted"]["flops"]["fraction"] < 0.7  # same budget
    assert json.loads((out / "result.json").read_text())["flops_reduction"] == pytest.approx(res["flops_reduction"])
    resolved = read_yaml((out / "recipe.resolved.yaml").read_text())
    assert resolved == parse_recipe(resolved) and resolved["run"]["batch"] == 8
    assert (out / "student" / "recipe.resolved.yaml").exists() and res["recipe"] == resolved
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [d["step"] for d in lines if "loss" in d]
    assert steps == list(range(1, 17)) and {"kl", "lr", "seconds", "stage"} <= set(lines[0])
    assert [d["step"] for d in lines if "eval_kl" in d] == [8, 16]
    student = load_activated(out / "student")
    assert student.budget()["fraction"] < 0.7
    with pytest.raises(VarcompressError, match="holds a finished run"):
        distill(r)
    r2 = tiny_recipe(tiny_teacher, out, tmp_path / "cache", steps=(6, 10), eval_every=8)
    r2["stages"][0]["lr"] = 1e-2
    (out / "result.json").unlink()
    with pytest.raises(VarcompressError, match="different recipe"):
        distill(r2)


def test_nan_loss_stops_cleanly_keeping_the_last_checkpoint(tiny_teacher, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = losses.kl_loss

    def poisoned(*a, **k):
        calls["n"] += 1
        v = real(*a, **k)
        return v * float("nan") if calls["n"] >= 5 else v

    monkeypatch.setattr(losses, "kl_loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(VarcompressError) as e:
        distill(tiny_recipe(tiny_teacher, out, tmp_path / "cache"))
    msg = str(e.value)
    assert "stopped at step 5" in msg and "step_0000004.pt" in msg and "\n" not in msg
    assert sorted(p.name for p in (out / "ckpt").glob("step_*.pt")) == ["step_0000002.pt", "step_0000004.pt"]
    assert not (out / "student").exists() and not (out / "result.json").exists()


def _cli(recipe_path, *extra, env=None):
    return [sys.executable, "-m", "varcompress.cli", "distill", str(recipe_path), *extra]


def test_sigkill_and_resume_equals_uninterrupted(tiny_teacher, tmp_path):
    ref = tiny_recipe(tiny_teacher, tmp_path / "ref", tmp_path / "cache", steps=(5, 7))
    ref["eval"]["converted"] = False
    distill(ref)
    r = tiny_recipe(tiny_teacher, tmp_path / "run", tmp_path / "cache", steps=(5, 7))
    r["eval"]["converted"] = False
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(r))
    env = dict(os.environ, VARCOMPRESS_DISTILL_TEST_SLEEP="0.4", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(_cli(path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = tmp_path / "run" / "ckpt" / "step_0000006.pt"  # mid joint stage (align ends at 5)
    t0 = time.time()
    while not target.exists() and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "run" / "result.json").exists()
    done = subprocess.run(_cli(path), env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = weights(tmp_path / "ref"), weights(tmp_path / "run")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(s)["step"] for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # the log was cut back to the checkpoint, no duplicates


def test_dynamic_routing_students_activity_is_refitted_after_distillation(tiny_teacher, tmp_path):
    """What the FLOPs model prices for dynamic-k routing is measured again on the distilled weights;
    the compensation means the student was trained with are kept."""
    r = tiny_recipe(tiny_teacher, tmp_path / "run", tmp_path / "cache", steps=(2, 4))
    r["student"]["convert"].update(routing="dynamic", tau=0.5, keep_ratio=1.0, sparse_scales=0)
    r["eval"]["converted"] = False
    distill(r)
    init, done = weights(tmp_path / "run", "student_init"), weights(tmp_path / "run")
    active = [k for k in done if k.endswith("expected_active")]
    assert active and any(not torch.equal(init[k], done[k]) for k in active)
    assert all(0 < float(done[k]) <= 4 for k in active)
    assert all(torch.equal(init[k], done[k]) for k in done if "skip_mean" in k)
