"""The whole workflow on one testbed teacher: convert -> distill -> baselines -> compare -> export.

`varcompress demo` runs it with a short budget so that a 2-core CPU finishes in minutes; the
shipped recipes (`recipes/testbed_*.yaml`) and docs/RESULTS.md use longer ones. Every
baseline gets exactly the student's fine-tuning budget (steps, batch, learning rate, the
same cached teacher token maps and seeds, the same trainable groups: `all`) and the
student's transformer FLOPs, and the table states each row's budget, so it is fair by
construction. Latency is timed in fresh processes at batch 16 only (batch 1 would double
the number of timing processes; `varcompress compare` times 1 and 16 by default).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .compare import CompareOptions, Entry, compare
from .compare.models import teacher_sha256
from .distill import distill
from .durable import atomic_write
from .errors import VarcompressError
from .export import export_model
from .formats.activated import read_activated_config
from .prune import budget_from_recipe, finetune, prune, save_pruned, teacher_data
from .prune.config import matched_config
from .resolve import TESTBED_NAMES, default_sampling
from .testbed.teachers import load_teacher

BASELINES = ("wanda", "residual-tokens", "fastvar")
LABELS = {"wanda": "Wanda FFN pruning", "residual-tokens": "training-free token pruning (residual)",
          "fastvar": "FastVAR-style cached token pruning"}


@dataclass
class PipelineConfig:
    dataset: str = "digits"
    flops_target: float = 0.6        # fraction of the teacher's transformer FLOPs the student keeps
    align_steps: int = 40            # stage 1: routers + selectors
    joint_steps: int = 80            # stage 2: everything
    data_count: int = 512            # teacher-drawn token maps (shared by the student and the baselines)
    n_per_class: int = 20            # samples per class in the comparison (x 3 sampling seeds)
    latency_rounds: int = 2          # fresh-process timing rounds per (model, path) at batch 16
    threads: int = 1

    def check(self) -> "PipelineConfig":
        if self.dataset not in TESTBED_NAMES:
            raise VarcompressError(f"--dataset: unknown dataset {self.dataset!r} (expected one of "
                                   f"{', '.join(TESTBED_NAMES)})")
        if not 0.05 <= self.flops_target < 1.0:
            raise VarcompressError(f"--flops-target {self.flops_target}: expected a fraction in [0.05, 1)")
        for k in ("align_steps", "joint_steps"):
            if getattr(self, k) < 1:
                raise VarcompressError(f"--{k.replace('_', '-')} must be >= 1")
        if self.data_count < 32:
            raise VarcompressError("data_count must be >= 32 (one batch)")
        if self.n_per_class < 2:
            raise VarcompressError("--n-per-class must be >= 2")
        if self.latency_rounds < 1:
            raise VarcompressError("latency_rounds must be >= 1")
        return self


def student_recipe(cfg: PipelineConfig, out: Path) -> dict:
    """The distill recipe of the demo: the shipped testbed recipe's method with the demo's budget."""
    return {
        "description": f"varcompress demo: {cfg.dataset} teacher -> activated student at {cfg.flops_target}x FLOPs",
        "teacher": {"checkpoint": cfg.dataset},
        "student": {"convert": {"experts": 16, "flops_target": cfg.flops_target, "allocation": "sensitivity",
                                "expert_scales": None, "sparse_scales": 0, "calib_samples": 64}},
        "data": {"source": "teacher", "count": cfg.data_count},
        "stages": [
            {"name": "align", "steps": cfg.align_steps, "lr": 2e-3, "warmup": max(1, cfg.align_steps // 10),
             "train": ["routers"], "losses": {"kl": 1.0, "router": 0.05}},
            {"name": "joint", "steps": cfg.joint_steps, "lr": 5e-4, "warmup": max(1, cfg.joint_steps // 10),
             "train": ["all"], "losses": {"kl": 1.0, "feature": 0.1}},
        ],
        "run": {"seed": 0, "batch": 32, "out_dir": str(out), "device": "cpu", "threads": cfg.threads,
                "ckpt_every": max(10, (cfg.align_steps + cfg.joint_steps) // 4),
                "eval_every": cfg.align_steps + cfg.joint_steps},
        "eval": {"testbed": False, "converted": False, "teacher": False, "teacher_maps": 32, "same_seed": 8,
                 "held_out": 32},
    }


def make_baseline(method: str, dataset: str, teacher, teacher_sha: str, student_dir: Path, recipe: dict,
                  out: Path, sampling: dict, log=print) -> Path:
    """A baseline at the student's FLOPs, fine-tuned with the student's budget (same groups); saved to `out`."""
    card = read_activated_config(student_dir)  # its budget: FLOPs fraction of the teacher, counted at save
    # the student's token settings (fastvar, or a student without token pruning: the baseline's own defaults)
    cfg = matched_config(method, card["budget"]["fraction"], card["convert_config"])
    res = prune(teacher, cfg, sampling=sampling)
    budget = budget_from_recipe(recipe)
    data = teacher_data(teacher, teacher_sha, budget, sampling)
    summary = finetune(res.model, teacher, data, budget, progress=True)
    log(f"  {method}: {res.info['fraction']:.3f} of the teacher's FLOPs, fine-tuned {summary['steps']} steps "
        f"(KL {summary['first_loss']:.3f} -> {summary['last_loss']:.3f})")
    source = {"spec": dataset, "sha256": teacher_sha, "testbed": dataset, "match": str(student_dir)}
    return save_pruned(res.model, res.info, out, source=source, finetune=summary, force=True)


def run_pipeline(cfg: PipelineConfig, out: Path, log=print, force: bool = False) -> dict:
    """Run every step into `out` (refused if it holds files, unless force); returns {paths, rows} (the
    comparison's rows)."""
    cfg.check()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise VarcompressError(f"{out}: exists and is not empty (use --force to overwrite)")
    torch.set_num_threads(cfg.threads)
    teacher, _ = load_teacher(cfg.dataset)
    sampling = default_sampling(cfg.dataset)
    sha = teacher_sha256(cfg.dataset)
    recipe = student_recipe(cfg, out / "distill")
    steps = cfg.align_steps + cfg.joint_steps
    log(f"[1/4] convert + distill: {cfg.dataset} teacher -> activated student at {cfg.flops_target:.2f}x "
        f"transformer FLOPs ({cfg.align_steps} align + {cfg.joint_steps} joint steps)")
    distill(copy.deepcopy(recipe), force=True)
    student = out / "distill" / "student"
    log(f"[2/4] baselines at the student's FLOPs, each fine-tuned {steps} steps on the same data and groups")
    baselines = {m: make_baseline(m, cfg.dataset, teacher, sha, student, recipe, out / "baselines" / m,
                               sampling, log)
                 for m in BASELINES}
    log(f"[3/4] compare ({cfg.n_per_class} samples per class x 3 sampling seeds, same seeds for every model; "
        "latency in fresh processes)")
    entries = [Entry("activated (converted, no distillation)", str(out / "distill" / "student_init")),
               Entry("activated + distill", str(student))]
    entries += [Entry(f"{LABELS[m]} + fine-tune", str(p)) for m, p in baselines.items()]
    opts = CompareOptions(n_per_class=cfg.n_per_class, teacher_maps=32, same_seed=16, grid_per_class=4,
                          batches=[16], rounds=cfg.latency_rounds, threads=cfg.threads)
    report = compare(entries, out / "compare", dataset=cfg.dataset, opts=opts, force=True, log=lambda s: log(f"  {s}"))
    log("[4/4] export the distilled student")
    export_model(str(out / "distill"), out / "export", force=True)
    summary = {"config": cfg.__dict__, "recipe": recipe, "rows": report["rows"],
               "paths": {"table": str(out / "compare" / "table.md"), "export": str(out / "export")}}
    text = json.dumps(summary, indent=1, default=str) + "\n"
    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(text))
    return summary
