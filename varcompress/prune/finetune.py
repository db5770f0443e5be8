"""Fine-tune a static baseline with the distillation budget of a `varcompress distill` recipe.

Why not `varcompress distill` itself: it takes activated students converted from a VAR of
the teacher's exact shape (`student.from` checks the VARConfig), so a neuron-pruned VAR
(smaller mlp_ratio) cannot go through it. This loop gives every baseline the same budget:
- the same data: the recipe's teacher-drawn token maps (the very same cache entry, drawn
  if missing), the same batches in the same order (`distill.data.global_batch`: seed,
  step, batch, uncond_prob);
- the same number of optimiser steps (the sum over the recipe's stages), batch size and
  schedule of the stage that trains weights (the last stage listing `experts`: lr,
  warm-up, cosine floor, weight decay, gradient clipping; AdamW betas (0.9, 0.95));
- the same trainable weights as that stage has for expert FFNs: the FFN weights
  (fc1/fc2, or an always-on expert's), nothing else;
- the loss is plain logits KL(teacher || student) per token (distill's `kl` at T=1);
  the activated student also gets its feature/router losses and a stage that aligns
  routers and selectors, which static baselines do not have.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from ..errors import VarcompressError


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

    def to_dict(self) -> dict:
        return asdict(self)


def budget_from_recipe(path_or_dict) -> FinetuneBudget:
    """Read the budget off a distill recipe (validated by the distill recipe parser)."""
    from ..distill.recipe import load_recipe, parse_recipe

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
                          recipe=None if isinstance(path_or_dict, dict) else str(path_or_dict))


def ffn_parameters(model) -> list[torch.nn.Parameter]:
    """The FFN weights: fc1/fc2 of dense blocks, or the expert tensors of always-on ExpertFFNs."""
    from ..convert.experts import ExpertFFN

    params = []
    for blk in model.blocks:
        for m in blk.modules():
            if isinstance(m, ExpertFFN):
                params += [m.experts_w1, m.experts_b1, m.experts_w2, m.experts_b2]
            elif all(isinstance(getattr(m, n, None), torch.nn.Linear) for n in ("fc1", "fc2")):
                params += list(m.fc1.parameters()) + list(m.fc2.parameters())
    if not params:
        raise VarcompressError("fine-tuning: the model has no FFN weights to train")
    return params


def teacher_data(teacher, teacher_sha: str, budget: FinetuneBudget, sampling: dict, progress: bool = False):
    """The recipe's token maps (the cache entry `varcompress distill` uses), drawn if missing."""
    from ..distill.data import default_cache_dir, draw_teacher_shards, teacher_cache

    d = budget.data
    s = {k: (d[k] if d[k] is not None else sampling[k]) for k in ("cfg", "top_k", "top_p")}
    root = d["cache_dir"] or default_cache_dir()
    cache = teacher_cache(root, teacher_sha, s, d["count"], d["seed"], d["shard_size"])
    if not cache.complete():
        with torch.no_grad():
            draw_teacher_shards(cache, teacher, s, progress)
    return cache.load()


def finetune(student, teacher, data, budget: FinetuneBudget, progress: bool = False) -> dict:
    """Train `student`'s FFN weights in place on KL(teacher || student); returns a summary."""
    from ..distill.data import global_batch, to_var_input
    from ..distill.losses import kl_loss
    from ..training.schedule import set_lr, warmup_cosine

    params = ffn_parameters(student)
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
    return {"budget": budget.to_dict(), "loss": "kl", "trained": "ffn", "steps": len(losses),
            "first_loss": sum(losses[:k]) / k, "last_loss": sum(losses[-k:]) / k,
            "seconds": round(time.time() - t0, 1)}
