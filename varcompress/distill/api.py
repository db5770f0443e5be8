"""`distill(recipe) -> DistillResult`: teacher + data + student -> stages -> outputs in run.out_dir.

out_dir/
  recipe.resolved.yaml   the recipe with every default (and the teacher's sampling) filled in
  student_init/          the converted, undistilled student (save_activated format)
  ckpt/step_XXXXXXX.pt   resumable training state (newest two kept)
  metrics.jsonl          one line per step (+ eval lines)
  student/               the distilled student (save_activated; + recipe.resolved.yaml)
  result.json            final metrics (teacher / converted / distilled), FLOPs, recipe
Rank 0 alone writes; rank-0 failures are broadcast so every rank stops with the same line.
"""
from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..activated.recalibrate import recalibrate
from ..dist import Dist, broadcast_error, dist_session
from ..durable import atomic_write, remove_stale_temps
from ..errors import VarcompressError
from ..formats.activated import save_activated
from ..generate.tokens import TokenMaps
from . import report
from .data import to_var_input
from .recipe import dump_recipe, load_recipe, parse_recipe, read_yaml, recipe_hash
from .setup import build_student, check_student, load_data, load_teacher_for
from .trainer import Context, train

OUTPUTS = ("recipe.resolved.yaml", "student_init", "ckpt", "metrics.jsonl", "student", "result.json")


@dataclass
class DistillResult:
    out_dir: Path
    student: object
    result: dict | None   # result.json contents (rank 0), None on other ranks


def _resolve(recipe, out_dir) -> dict:
    if isinstance(recipe, (str, Path)):
        return load_recipe(recipe, out_dir)
    r = parse_recipe(copy.deepcopy(recipe))
    if out_dir is not None:
        r["run"]["out_dir"] = str(out_dir)
    return r


def _on_main(d: Dist, fn):
    """Run fn on rank 0; every rank raises the same VarcompressError if it failed."""
    err, out = None, None
    if d.is_main:
        try:
            out = fn()
        except VarcompressError as e:
            err = str(e)
    err = broadcast_error(err, d)
    if err is not None:
        raise VarcompressError(err)
    return out


def _prepare_out(out: Path, h: str, r: dict, force: bool, resume: bool) -> None:
    for folder in (out, out / "ckpt"):  # work in progress of a killed run
        remove_stale_temps(folder)
    if force:
        for name in OUTPUTS:
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    elif (out / "result.json").exists():
        raise VarcompressError(f"{out}: holds a finished run (use --force to run it again)")
    elif (out / "recipe.resolved.yaml").exists() and any((out / name).exists() for name in OUTPUTS[1:]):
        # (a run that failed before writing anything but its recipe has nothing to lose: taken over)
        old = read_yaml((out / "recipe.resolved.yaml").read_text(), str(out / "recipe.resolved.yaml"))
        if not isinstance(old, dict) or recipe_hash_safe(old) != h:
            raise VarcompressError(f"{out}: holds a run of a different recipe (use --force to start over)")
        if not resume and any((out / "ckpt").glob("step_*.pt")):
            raise VarcompressError(f"{out}: holds checkpoints of an unfinished run (resume, or --force)")
    text = dump_recipe(r)
    atomic_write(out / "recipe.resolved.yaml", lambda tmp: Path(tmp).write_text(text))


def recipe_hash_safe(d: dict) -> str | None:
    try:
        return recipe_hash(parse_recipe(d))
    except (VarcompressError, KeyError, TypeError):
        return None


def distill(recipe: dict | str | Path, force: bool = False, resume: bool = True,
            out_dir: str | Path | None = None) -> DistillResult:
    """Run a recipe (a path or a dict); under torchrun each process calls this."""
    r = _resolve(recipe, out_dir)
    if r["run"]["threads"] is not None:
        torch.set_num_threads(r["run"]["threads"])
    with dist_session(r["run"]["device"], r["run"]["ddp_timeout_min"]) as d:
        return _distill(r, d, force, resume)


def _distill(r: dict, d: Dist, force: bool, resume: bool) -> DistillResult:
    out = Path(r["run"]["out_dir"])
    t = load_teacher_for(r, d.device)
    check_student(r, t)
    h = recipe_hash(r)
    _on_main(d, lambda: _prepare_out(out, h, r, force, resume))
    data, held_out = load_data(r, t, d, _on_main)
    per = r["run"]["batch"] // r["run"]["accumulation"]
    if per % d.world:
        raise VarcompressError(f"run.batch: micro-batches of {per} samples do not split over {d.world} processes")
    student = build_student(r, t, data, out, d, _on_main)
    maps = None
    if held_out is not None:
        x = to_var_input(t.vae, t.var.begin_ends, held_out.idx.to(d.device))
        maps = TokenMaps(held_out.labels.to(d.device), held_out.idx, x)
    ctx = Context(r, h, t.var, student, t.vae, data, maps, d, out)
    summary = train(ctx)
    result = _on_main(d, lambda: _finish(ctx, t, summary))
    return DistillResult(out, student, result)


def _refit_activity(ctx: Context, maps: int = 32) -> None:
    """Dynamic routing: distillation moved how many experts fire, so the activity the FLOPs model
    prices is refitted on training maps (the compensation means stay: the student learned them)."""
    if not any(m.routing == "dynamic" for blk in ctx.student.blocks for m in blk.expert_ffns()):
        return
    n, dev = min(len(ctx.data), maps), ctx.dist.device
    x = to_var_input(ctx.vae, ctx.teacher.begin_ends, ctx.data.idx[:n].to(dev))
    recalibrate(ctx.student, ctx.data.labels[:n].to(dev), x)


def _finish(ctx: Context, t, summary: dict) -> dict:
    out, r = ctx.out, ctx.recipe
    _refit_activity(ctx)
    save_activated(ctx.student, out / "student", source_sha256=t.sha256, force=True,
                   source={"checkpoint": str(t.var_path), "testbed": t.dataset},
                   extra_files={"recipe.resolved.yaml": dump_recipe(r)})
    res = report.final_report(ctx, t, summary)
    atomic_write(out / "result.json", lambda tmp: Path(tmp).write_text(json.dumps(res, indent=1) + "\n"))
    return res
