"""Re-estimate, on the model's own activations, what convert estimated on the dense teacher.

Convert fits two statistics of every ExpertFFN on teacher activations: the compensation
means (`skip_mean`: an expert's mean output where the router skips it) and, for dynamic
routing, the expected number of active experts (what the FLOPs model prices). Distillation
changes the experts' weights and the activations that reach them, so both go stale;
`recalibrate` measures them again by teacher-forcing the model on token maps.
"""
from __future__ import annotations

import torch

from ..models.var import teacher_force_with_hooks, with_uncond
from .experts import ExpertFFN


@torch.no_grad()
def routed_inputs(model, labels: torch.Tensor, x: torch.Tensor, tokens: int, seed: int = 0,
                  batch: int = 8) -> dict[ExpertFFN, torch.Tensor]:
    """Each ExpertFFN's inputs at the rows it routes, about `tokens` rows per FFN (a random subset,
    drawn with its own generator) from teacher forcing on (labels, x)."""
    ffns = [m for blk in model.blocks for m in blk.expert_ffns()]
    caps: dict[ExpertFFN, list[torch.Tensor]] = {m: [] for m in ffns}
    calls = -(-labels.shape[0] // batch)
    g = torch.Generator().manual_seed(seed)

    def capture(m, args):
        X = args[0].reshape(-1, args[0].shape[-1])
        flag = args[1].routed if len(args) > 1 and args[1] is not None else True
        if flag is False:
            return
        if torch.is_tensor(flag):
            X = X[flag.reshape(-1)]
        take = torch.randperm(X.shape[0], generator=g)[:-(-tokens // calls)].to(X.device)
        caps[m].append(X.index_select(0, take).clone())

    teacher_force_with_hooks(model, labels, x, [m.register_forward_pre_hook(capture) for m in ffns], batch)
    return {m: torch.cat(v) for m, v in caps.items() if v}


@torch.no_grad()
def recalibrate(model, labels: torch.Tensor, x: torch.Tensor, compensation: bool = False, tokens: int = 8192,
                seed: int = 0) -> dict:
    """Refill every ExpertFFN's expected activity and, with `compensation` (and a compensating model),
    its compensation means from the model's own routed inputs on (labels, x), each sample also with
    the unconditional label as CFG runs it. Returns the mean relative change of the means.

    Refitting the means of a *distilled* student hurts it (KL +7% on digits, docs/DISTILL.md): the
    student was trained with the stale means and relies on them; distill refits the activity only.
    """
    labels, x = with_uncond(model, labels, x)
    moved, active = [], []
    for m, X in routed_inputs(model, labels, x, tokens, seed).items():
        if m.all_active() or m.routed == 0:
            continue
        if compensation and model.convert_cfg.compensation:
            before = m.compensation().clone()
            m.calibrate_compensation(X)
            moved.append(float((m.compensation() - before).norm() / before.norm().clamp_min(1e-12)))
        _, mask = m.route(X)
        m.expected_active.fill_(float(mask.sum(1).float().mean()))
        active.append(float(m.expected_active))
    return {"compensation_change": sum(moved) / len(moved) if moved else 0.0, "expected_active": active}
