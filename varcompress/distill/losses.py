"""Distillation losses and the objective module (what DDP wraps: student + losses, not the teacher).

Every loss is a mean over samples (or tokens, the same number per sample), so gradients
averaged over ranks equal the gradient of the global batch (balance excepted: a
product of batch means, equal only up to the split).
- kl: T^2 * KL(teacher || student) of the next-token distributions at temperature T,
  averaged over tokens (`scales: token`) or with every scale weighted equally (`scale`:
  the few early-scale tokens, which fix the global layout, count as much as the last scale).
- guided: KL of the CFG-guided distributions (rows paired [cond; uncond], the scale's
  guidance weight as in sampling); the trainer pairs the rows when its weight is > 0.
- feature: per block, ||h_s - h_t||^2 / ||h_t||^2 per token (teacher block outputs).
- router: MSE of each router's predicted (log-)norms to the experts' actual output
  norms on the tokens it routes (the target convert fits, on training data).
- selector: per (row, scale), MSE of the centred selector scores to the centred
  log-norms of the cost of skipping each token: the teacher block's update minus what the
  block's reconstruction would give it (`token_path.skip_bases`, the target convert fits;
  only the ranking within a scale matters).
- balance: Switch-style load balance, E * sum_j f_j P_j - 1 (0 when uniform).
- budget: keeps the relaxations calibrated to the hard budget: mean soft keep gate vs
  k/n per scale; for dynamic routing, soft active-expert count above the converted one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..activated.router import router_targets, topk_mask
from ..activated.token_path import scale_scores, scale_spans, skip_bases
from ..metrics.kl import log_probs, token_kl
from .relax import StudentHooks


def scale_mean(per_token: torch.Tensor, patch_nums, weighting: str = "token") -> torch.Tensor:
    """Mean of a (B, L) per-token loss: over tokens, or every scale weighted equally ("scale")."""
    if weighting == "token":
        return per_token.mean()
    sizes = [pn * pn for pn in patch_nums]
    return torch.stack([c.mean() for c in per_token.split(sizes, dim=1)]).mean()


def kl_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, temperature: float = 1.0, patch_nums=None,
            weighting: str = "token") -> torch.Tensor:
    per_token = token_kl(log_probs(t_logits, temperature), log_probs(s_logits, temperature))
    return scale_mean(per_token, patch_nums, weighting) * temperature ** 2


def guided_kl_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, cfg: float, patch_nums) -> torch.Tensor:
    """KL(teacher || student) of the CFG-guided distributions sampled at generation.

    Rows are [cond; uncond] pairs; at scale s the guided logits are (1+t) cond - t uncond
    with t = cfg * s / (S - 1), exactly as `autoregressive_infer_cfg` combines them.
    """
    S, B = len(patch_nums), s_logits.shape[0] // 2
    t = torch.cat([torch.full((pn * pn,), cfg * s / (S - 1)) for s, pn in enumerate(patch_nums)])
    t = t.to(s_logits.device).view(1, -1, 1)

    def guide(z):
        z = z.float()
        return log_probs((1 + t) * z[:B] - t * z[B:])

    return token_kl(guide(t_logits), guide(s_logits)).mean()


def feature_loss(s_out: dict, t_out: list, blocks: list[int]) -> torch.Tensor:
    terms = []
    for b in blocks:
        hs, ht = s_out[b].float(), t_out[b].float()
        terms.append(((hs - ht).pow(2).sum(-1) / ht.pow(2).sum(-1).clamp_min(1e-6)).mean())
    return torch.stack(terms).mean()


def router_loss(ffn_in: list) -> torch.Tensor | None:
    terms = []
    for ffn, X in ffn_in:
        if ffn.all_active() or ffn.routed == 0 or X.shape[0] == 0:
            continue
        X = X.float()
        with torch.no_grad():
            y = router_targets(ffn.expert_norms(X)[:, ffn.shared:], ffn.router.target)
        terms.append((ffn.router.net(X).float() - y).pow(2).mean())
    return torch.stack(terms).mean() if terms else None


def balance_loss(scores: list) -> torch.Tensor | None:
    terms = []
    for ffn, s in scores:
        if ffn.all_active() or ffn.routing != "topk" or s.shape[0] == 0:
            continue
        s = s.float()
        f = topk_mask(s.detach(), ffn.top_k).float().mean(0) / ffn.top_k
        terms.append(s.shape[1] * (f * s.softmax(-1).mean(0)).sum() - 1)
    return torch.stack(terms).mean() if terms else None


def budget_loss(gates: list, scores: list, temperature: float = 1.0) -> torch.Tensor | None:
    terms = [(p.mean(1) - frac).pow(2).mean() for p, frac in gates]
    for ffn, s in scores:
        if ffn.routing == "dynamic" and not ffn.all_active():
            norms = ffn.router.predicted_norms(s.float())
            mx = norms.amax(1, keepdim=True)
            soft = torch.sigmoid((norms - (1 - ffn.tau) * mx) / (temperature * mx.clamp_min(1e-6) * 0.1))
            terms.append(F.relu(soft.sum(1).mean() - ffn.expected_active).pow(2) / ffn.routed ** 2)
    return torch.stack(terms).mean() if terms else None


def selector_loss(blocks, s_in: dict, t_in: list, t_out: list) -> torch.Tensor | None:
    terms = []
    for b, blk in enumerate(blocks):
        if b not in s_in or not any(p.requires_grad for p in blk.selector.parameters()):
            continue
        pns, x = blk.patch_nums, s_in[b]
        u = t_out[b].float() - t_in[b].float()
        upd = (u - skip_bases(blk.rec, u)).norm(dim=-1).clamp_min(1e-8).log()   # the cost of skipping
        for s, off, n in scale_spans(pns, 0, len(pns)):
            if blk.keep_counts[s] < n:
                prev = x[:, off - pns[s - 1] ** 2:off] if s > 0 else None
                sc = scale_scores(blk.selector, x[:, off:off + n], prev, pns, s).float()
                y = upd[:, off:off + n]
                terms.append(((sc - sc.mean(1, keepdim=True)) - (y - y.mean(1, keepdim=True))).pow(2).mean())
    return torch.stack(terms).mean() if terms else None


@torch.no_grad()
def teacher_targets(teacher, labels: torch.Tensor, x: torch.Tensor, blocks: bool) -> dict:
    """Teacher logits, and (if asked) every block's input and output, from one forward."""
    t_in, t_out, handles = [], [], []

    def grab(module, args, out):
        t_in.append(args[0])
        t_out.append(out)

    if blocks:
        for blk in teacher.blocks:
            handles.append(blk.register_forward_hook(grab))
    try:
        logits = teacher(labels, x)
    finally:
        for h in handles:
            h.remove()
    return {"logits": logits, "block_in": t_in, "block_out": t_out}


def needs_teacher_blocks(losses: dict) -> bool:
    return losses["feature"]["weight"] > 0 or losses["selector"]["weight"] > 0


class Objective(nn.Module):
    """forward(labels, x, teacher targets) -> (weighted total loss, detached parts)."""

    def __init__(self, student, hooks: StudentHooks, losses: dict, temperature: float = 1.0, cfg: float = 1.5):
        super().__init__()
        self.student, self.losses, self.temperature = student, losses, temperature
        g = losses["guided"]["cfg"]
        self.cfg = cfg if g is None else g
        object.__setattr__(self, "hooks", hooks)  # not a submodule
        depth = len(student.blocks)
        fb = losses["feature"]["blocks"]
        self.feature_blocks = list(range(depth)) if fb == "all" else list(fb)

    def forward(self, labels: torch.Tensor, x: torch.Tensor, tgt: dict):
        L, h = self.losses, self.hooks
        h.reset()
        try:
            logits = self.student(labels, x)
            parts: dict[str, torch.Tensor] = {}
            if L["kl"]["weight"] > 0:
                parts["kl"] = kl_loss(logits, tgt["logits"], L["kl"]["temperature"], self.student.patch_nums,
                                      L["kl"]["scales"])
            if L["guided"]["weight"] > 0:
                parts["guided"] = guided_kl_loss(logits, tgt["logits"], self.cfg, self.student.patch_nums)
            if L["feature"]["weight"] > 0:
                parts["feature"] = feature_loss(h.block_out, tgt["block_out"], self.feature_blocks)
            optional = {"router": lambda: router_loss(h.ffn_in), "balance": lambda: balance_loss(h.scores),
                        "budget": lambda: budget_loss(h.gates, h.scores, self.temperature),
                        "selector": lambda: selector_loss(self.student.blocks, h.block_in, tgt["block_in"],
                                                          tgt["block_out"])}
            for name, fn in optional.items():
                if L[name]["weight"] > 0:
                    v = fn()
                    parts[name] = v if v is not None else logits.new_zeros(())
        finally:
            h.reset()
        total = sum(L[k]["weight"] * v for k, v in parts.items())
        return total, {k: v.detach() for k, v in parts.items()}
