"""The distillation loop: stages, accumulation, DDP, resume, NaN guard, JSONL log, tqdm.

Global step g runs stage i when bounds[i] <= g < bounds[i+1]. The global batch of step g
is `global_batch(seed, g)`; it is cut into `accumulation` micro-batches and each of those
into equal per-rank slices, so 1 process and N processes optimise the same objective.
Rank 0 alone writes: checkpoints `ckpt/step_XXXXXXX.pt` (student + optimiser + stage +
step) every `ckpt_every` steps and at every stage end, and `metrics.jsonl`. A restart
resumes from the newest checkpoint that reads and verifies (a torn newest one falls back to
the previous, with one warning), mid-stage included (the log is cut back to it).
A non-finite loss or gradient stops every rank before the optimiser step, with one line.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..dist import Dist, all_mean
from ..durable import append_line, atomic_write
from ..errors import VarcompressError
from ..metrics.teacher_relative import teacher_forced_agreement
from ..training.resume import latest_checkpoint, load_latest, save_training_state, step_generator
from ..training.schedule import set_lr, warmup_cosine
from .data import TokenSet, global_batch, to_var_input
from .losses import Objective, needs_teacher_blocks, teacher_targets
from .relax import StudentHooks
from .stages import apply_stage


@dataclass
class Context:
    recipe: dict
    recipe_hash: str
    teacher: object
    student: object
    vae: object
    data: TokenSet
    held_out: object | None      # TokenMaps for eval_every (or None)
    dist: Dist
    out: Path
    hooks: StudentHooks | None = None
    summary: dict = field(default_factory=dict)

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "ckpt"


def stage_bounds(stages: list[dict]) -> list[int]:
    b = [0]
    for st in stages:
        b.append(b[-1] + st["steps"])
    return b


def _autocast(ctx: Context):
    on = ctx.recipe["run"]["precision"] == "bf16" and ctx.dist.device.type == "cuda"
    return torch.autocast("cuda", dtype=torch.bfloat16) if on else nullcontext()


def _resume(ctx: Context) -> tuple[int, dict | None, float]:
    found = load_latest(ctx.ckpt_dir, ("student", "opt", "step", "recipe_hash"), "student", warn=ctx.dist.is_main)
    if found is None:
        return 0, None, 0.0
    path, state = found
    if state.get("recipe_hash") != ctx.recipe_hash:
        raise VarcompressError(f"{path}: written by a different recipe (use --force to start over)")
    ctx.student.load_state_dict(state["student"], strict=True)
    return int(state["step"]), state, float(state.get("seconds", 0.0))


def _cut_log(path: Path, upto: int) -> None:
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= upto:
                keep.append(line)
        except (json.JSONDecodeError, AttributeError):
            continue  # a line cut short by a kill (or not a record)
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(s + "\n" for s in keep)))


def _log(ctx: Context, rec: dict) -> None:
    if ctx.dist.is_main:
        append_line(ctx.out / "metrics.jsonl", json.dumps(rec))


def _step(ctx: Context, model, opt, params, st: dict, step: int, s0: int) -> tuple[dict, float, float]:
    r, d = ctx.recipe, ctx.dist
    run = r["run"]
    lr = st["lr"] * warmup_cosine(step - s0, st["steps"], st["warmup"], st["lr_floor"])
    set_lr(opt, lr)
    paired = st["losses"]["guided"]["weight"] > 0  # every sample also with the unconditional label
    drop = 0.0 if paired else r["data"]["uncond_prob"]
    labels, idx = global_batch(ctx.data, run["seed"], step, run["batch"], drop, ctx.teacher.num_classes)
    acc = run["accumulation"]
    per = run["batch"] // acc
    chunk = per // d.world
    want_blocks = needs_teacher_blocks(st["losses"])
    sums: dict[str, torch.Tensor] = {}
    for m in range(acc):
        lo = m * per + d.rank * chunk
        lab = labels[lo:lo + chunk].to(d.device)
        x = to_var_input(ctx.vae, ctx.teacher.begin_ends, idx[lo:lo + chunk].to(d.device))
        if paired:  # rows [cond; uncond] as in CFG sampling
            lab, x = torch.cat((lab, torch.full_like(lab, ctx.teacher.num_classes))), torch.cat((x, x))
        ctx.hooks.gen = step_generator(run["seed"], step, stream=1000 + m * d.world + d.rank)
        with _autocast(ctx):
            tgt = teacher_targets(ctx.teacher, lab, x, want_blocks)
        sync = model.no_sync() if d.world > 1 and m < acc - 1 else nullcontext()
        with sync:
            with _autocast(ctx):
                loss, parts = model(lab, x, tgt)
            (loss / acc).backward()
        parts["loss"] = loss.detach()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v.float() / acc
    keys = sorted(sums)
    vec = all_mean(torch.stack([sums[k] for k in keys]), d)
    clip = st["grad_clip"]
    gn = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else float("inf"))
    parts = dict(zip(keys, vec.tolist()))
    if not (torch.isfinite(vec).all() and torch.isfinite(gn)):
        raise _nonfinite(ctx, step, st, parts, float(gn))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return parts, lr, float(gn)


def _nonfinite(ctx, step, st, parts, gn) -> VarcompressError:
    last = latest_checkpoint(ctx.ckpt_dir)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
    return VarcompressError(f"stopped at step {step + 1} (stage {st['name']}): non-finite loss or gradient "
                            f"({shown}, grad_norm={gn:.4g}); last good checkpoint: {last or 'none'}")


def _save(ctx: Context, opt, si: int, done: int, seconds: float) -> None:
    if ctx.dist.is_main:
        state = {"student": ctx.student.state_dict(), "opt": opt.state_dict(), "opt_stage": si, "step": done,
                 "recipe_hash": ctx.recipe_hash, "seconds": seconds}
        save_training_state(ctx.ckpt_dir, done, state)


def _evaluate(ctx: Context) -> dict:
    ctx.student.eval()
    try:
        m = teacher_forced_agreement(ctx.student, ctx.teacher, ctx.held_out)
    finally:
        ctx.student.train()
    return {"eval_kl": m["kl"], "eval_top1": m["top1_agreement"]}


def train(ctx: Context) -> dict:
    """Run (or finish) every stage; returns a summary. The student ends in eval mode."""
    r, d = ctx.recipe, ctx.dist
    run, stages = r["run"], r["stages"]
    bounds = stage_bounds(stages)
    start, state, seconds0 = _resume(ctx)
    if d.is_main:
        _cut_log(ctx.out / "metrics.jsonl", start)
    ctx.hooks = StudentHooks(ctx.student)
    sleep = float(os.environ.get("VARCOMPRESS_DISTILL_TEST_SLEEP", "0"))  # test hook: slow steps down
    bar = tqdm(total=bounds[-1], initial=start, desc="distill", disable=not (d.is_main and run["progress"]))
    t0, last = time.time() - seconds0, {}
    try:
        for si, st in enumerate(stages):
            s0, s1 = bounds[si], bounds[si + 1]
            if start >= s1:
                continue
            params = apply_stage(ctx.student, ctx.hooks, st, si)
            opt = torch.optim.AdamW(params, lr=st["lr"], betas=(0.9, 0.95), weight_decay=st["weight_decay"])
            if state is not None and state.get("opt_stage") == si and start > s0:
                opt.load_state_dict(state["opt"])
            objective = Objective(ctx.student, ctx.hooks, st["losses"], st["relax"]["temperature"],
                                  cfg=r["data"]["cfg"])
            model = objective
            if d.world > 1:
                model = torch.nn.parallel.DistributedDataParallel(objective, find_unused_parameters=True,
                                                                  broadcast_buffers=False)
            ctx.student.train()
            bar.set_description(f"distill [{st['name']}]")
            for step in range(max(start, s0), s1):
                ts = time.time()
                parts, lr, gn = _step(ctx, model, opt, params, st, step, s0)
                done = step + 1
                if sleep:
                    time.sleep(sleep)
                last = {"step": done, "stage": st["name"], **parts, "lr": lr, "grad_norm": gn,
                        "seconds": round(time.time() - t0, 3), "step_seconds": round(time.time() - ts, 4)}
                if done % run["log_every"] == 0 or done == s1:
                    _log(ctx, last)
                if done % run["ckpt_every"] == 0 or done == s1:
                    _save(ctx, opt, si, done, time.time() - t0)
                if run["eval_every"] and done % run["eval_every"] == 0 and d.is_main and ctx.held_out is not None:
                    _log(ctx, {"step": done, "stage": st["name"], **_evaluate(ctx)})
                bar.update(1)
                bar.set_postfix(loss=f"{parts['loss']:.4f}")
            start = s1
    finally:
        bar.close()
        ctx.hooks.remove()
        ctx.student.eval()
        for p in ctx.student.parameters():
            p.requires_grad_(False)
    return {"steps": bounds[-1], "seconds": round(time.time() - t0, 1), "final": last, "world_size": d.world}
