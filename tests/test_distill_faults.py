"""`distill` killed with SIGKILL at random points: every restart resumes, nothing is ever half-written,
and the run ends with the weights of an uninterrupted one."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from varcompress.checkpoint import read_state_dict
from varcompress.convert import load_activated
from varcompress.distill import distill
from varcompress.distill.recipe import read_yaml
from varcompress.durable import is_temp_name
from varcompress.training.resume import latest_checkpoint, load_training_state

from .test_distill_common import tiny_recipe, tiny_teacher  # noqa: F401  (fixture)

KILLS = 5


def check_nothing_half_written(*roots: Path) -> None:
    """Every finished-looking file parses completely; only temp names may hold work in progress."""
    for root in roots:
        for p in root.rglob("*"):
            if any(is_temp_name(part) for part in p.relative_to(root).parts) or p.is_dir():
                continue
            if p.suffix == ".pt":
                assert {"student", "opt", "step"} <= set(load_training_state(p)), p
            elif p.suffix == ".safetensors":
                read_state_dict(p)
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".yaml":
                assert isinstance(read_yaml(p.read_text()), dict), p
            elif p.suffix == ".jsonl":
                for line in p.read_text().splitlines():  # appended whole lines only
                    json.loads(line)
        for name in ("student_init", "student"):
            if (root / name).exists():
                load_activated(root / name)


def _latest_step(run: Path) -> int:
    path = latest_checkpoint(run / "ckpt")
    return int(path.stem.split("_")[1]) if path else 0


def test_sigkill_at_random_points_always_resumes_and_never_half_writes(tiny_teacher, tmp_path):
    steps = (6, 8)
    ref = tiny_recipe(tiny_teacher, tmp_path / "ref", tmp_path / "ref_cache", steps=steps)
    ref["eval"]["converted"] = False
    distill(ref)

    run, cache = tmp_path / "run", tmp_path / "cache"  # its own cache: kills land in data drawing too
    r = tiny_recipe(tiny_teacher, run, cache, steps=steps)
    r["eval"]["converted"] = False
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(r))
    cmd = [sys.executable, "-m", "varcompress.cli", "distill", str(recipe)]
    env = dict(os.environ, VARCOMPRESS_DISTILL_TEST_SLEEP="0.25", OMP_NUM_THREADS="1")
    rng = random.Random(1234)
    # kill points: once early (teacher data, conversion), then after randomly chosen checkpoints,
    # each with a random delay so the kill also lands mid-step and mid-write
    targets = [0] + sorted(rng.sample(range(2, sum(steps) - 2, 2), KILLS - 1))
    seen = 0
    for target in targets:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t0 = time.time()
        while _latest_step(run) < target and proc.poll() is None and time.time() - t0 < 300:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.6) if target else rng.uniform(0.5, 3.0))
        assert proc.poll() is None, "the run finished before its kill point"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        check_nothing_half_written(run, cache)
        step = _latest_step(run)
        assert step >= max(seen, target)  # a restart resumes: it never loses a checkpoint it had
        seen = step
    done = subprocess.run(cmd, env=dict(env, VARCOMPRESS_DISTILL_TEST_SLEEP="0"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    check_nothing_half_written(run, cache)

    a, b = (read_state_dict(d / "student" / "model.safetensors") for d in (tmp_path / "ref", run))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logged = [json.loads(s)["step"] for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, sum(steps) + 1))  # cut back to the checkpoint on every resume
    leftovers = [p for root in (run, cache) for p in root.rglob("*") if is_temp_name(p.name)]
    assert not leftovers, leftovers
