"""Fine-tune a baseline with the budget of a `varcompress distill` recipe: fair by construction.

Why not `varcompress distill` itself: it takes activated students converted from a VAR of
the teacher's exact shape (`student.from` checks the VARConfig), so a neuron-pruned VAR
(smaller mlp_ratio) or a scale split cannot go through it. This loop gives every
baseline exactly what the recipe gives its student:
- the same data: the recipe's teacher-drawn token maps (the very same cache entry, drawn
  if missing), the same batches in the same order (`distill.data.global_batch`: seed,
  step, batch, uncond_prob);
- the same number of optimiser steps (the sum over the recipe's stages), batch size and
  schedule of the stage that trains weights (the last stage listing `experts` or `all`:
  lr, warm-up, cosine floor, weight decay, gradient clipping; AdamW betas (0.9, 0.95));
- the same trainable parameter groups as that stage (`train:`, e.g. `[all]`), resolved
  by distill's own `param_groups` (a dense FFN counts as `experts`); a scale split
  trains its small model only (the teacher part stays the teacher);
- the loss is plain logits KL(teacher || student) per token (distill's `kl` at T=1);
  the activated student also gets its feature/router losses and a stage that aligns
  routers and selectors, which the baselines spend on the same groups instead.
The summary records groups, steps and seeds, which `compare` prints per row.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from ..distill.data import default_cache_dir, draw_teacher_shards, global_batch, teacher_cache, to_var_input
from ..distill.losses import kl_loss
from ..distill.recipe import load_recipe, parse_recipe
from ..distill.stages import param_groups, stage_groups
from ..errors import VarcompressError
from ..training.schedule import set_lr, warmup_cosine


@dataclass
class FinetuneBudget:
    steps: int
    lr: float
    warmup: int
    lr_floor: float
    weight_decay: float
    grad_clip: float | None
    batch: int
    seed: int
    uncond_prob: float
    data: dict           # count, seed, shard_size, cache_dir, cfg, top_k, top_p (None: the teacher's)
    recipe: str | None = None
    train: tuple[str, ...] = ("experts",)  # the weight stage's parameter groups (distill's names)

    def to_dict(self) -> dict:
        return asdict(self)


def budget_from_recipe(path_or_dict) -> FinetuneBudget:
    """Read the budget off a distill recipe (validated by the distill recipe parser)."""
    r = parse_recipe(dict(path_or_dict)) if isinstance(path_or_dict, dict) else load_recipe(path_or_dict)
    if r["data"]["source"] != "teacher":
        raise VarcompressError("finetune recipe: only data.source: teacher is supported for baselines")
    stages = r["stages"]
    weight_stages = [s for s in stages if "experts" in s["train"] or "all" in s["train"]]
    st = (weight_stages or stages)[-1]
    d = r["data"]
    return FinetuneBudget(steps=sum(s["steps"] for s in stages), lr=st["lr"], warmup=st["warmup"],
                          lr_floor=st["lr_floor"], weight_decay=st["weight_decay"], grad_clip=st["grad_clip"],
                          batch=r["run"]["batch"], seed=r["run"]["seed"], uncond_prob=d["uncond_prob"],
                          data={k: d[k] for k in ("count", "seed", "shard_size", "cache_dir", "cfg", "top_k", "top_p")},
                          recipe=None if isinstance(path_or_dict, dict) else str(path_or_dict),
                          train=tuple(st["train"]))


def trainable_parameters(model, groups) -> tuple[list[torch.nn.Parameter], list[str]]:
    """The parameters of `groups` (distill's names; `all` = every group) and the groups that hold any."""
    target = getattr(model, "trainable_module", model)
    named = param_groups(target)
    names = stage_groups({"train": list(groups)})
    params = [p for g in names for _, p in named[g]]
    if not params:
        raise VarcompressError(f"fine-tuning: groups {', '.join(groups)} hold no parameters in this model")
    return params, [g for g in names if named[g]]


def teacher_data(teacher, teacher_sha: str, budget: FinetuneBudget, sampling: dict, progress: bool = False):
    """The recipe's token maps (the cache entry `varcompress distill` uses), drawn if missing."""
    d = budget.data
    s = {k: (d[k] if d[k] is not None else sampling[k]) for k in ("cfg", "top_k", "top_p")}
    root = d["cache_dir"] or default_cache_dir()
    cache = teacher_cache(root, teacher_sha, s, d["count"], d["seed"], d["shard_size"])
    if not cache.complete():
        with torch.no_grad():
            draw_teacher_shards(cache, teacher, s, progress)
    return cache.load()


def finetune(student, teacher, data, budget: FinetuneBudget, progress: bool = False) -> dict:
    """Train `student`'s budget groups in place on KL(teacher || student); returns a summary."""
    params, held = trainable_parameters(student, budget.train)
    for p in student.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=budget.lr, betas=(0.9, 0.95), weight_decay=budget.weight_decay)
    dev = student.pos_1LC.device
    teacher.eval()
    student.train()
    t0, losses = time.time(), []
    try:
        for step in tqdm(range(budget.steps), desc="fine-tune", disable=not progress):
            set_lr(opt, budget.lr * warmup_cosine(step, budget.steps, budget.warmup, budget.lr_floor))
            labels, idx = global_batch(data, budget.seed, step, budget.batch, budget.uncond_prob,
                                       teacher.num_classes)
            labels, idx = labels.to(dev), idx.to(dev)
            with torch.no_grad():
                x = to_var_input(teacher.vae, teacher.begin_ends, idx)
                t_logits = teacher(labels, x)
            loss = kl_loss(student(labels, x), t_logits)
            if not torch.isfinite(loss):
                raise VarcompressError(f"fine-tuning stopped at step {step + 1}: non-finite loss")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip = budget.grad_clip if budget.grad_clip is not None else float("inf")
            torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            losses.append(loss.item())
    finally:
        student.eval()
        for p in student.parameters():
            p.requires_grad_(False)
    k = max(1, len(losses) // 10)
    return {"budget": budget.to_dict(), "loss": "kl", "trained": list(budget.train), "groups": held,
            "seeds": {"run": budget.seed, "data": budget.data["seed"]}, "steps": len(losses),
            "first_loss": sum(losses[:k]) / k, "last_loss": sum(losses[-k:]) / k,
            "seconds": round(time.time() - t0, 1)}
