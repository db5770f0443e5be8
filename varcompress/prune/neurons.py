"""Structured FFN neuron pruning: score every hidden neuron, keep the best `h` per block, remove the rest.

Removal is physical: fc1 loses rows, fc2 loses columns, and every block keeps the same
width `h`, so the result is a plain VAR with `mlp_ratio = h / C`, saved as an
official-format state dict that `varcompress.load_var` (and the official code, which
reads mlp_ratio the same way) loads. Scores:
- magnitude: ||fc1[j, :]||_2 * ||fc2[:, j]||_2 (no data);
- wanda:     ||a_j||_2 * ||fc2[:, j]||_1, with a_j the neuron's GELU output over the
  calibration tokens: Wanda's |W_ij| * ||X_j|| for the fc2 weights, summed over the
  column, i.e. the size of what the neuron actually adds to the block (a neuron with
  huge weights that never fires scores 0).
Bias compensation (optional) adds fc2[:, removed] @ mean(a_removed) to fc2.bias, so a
removed neuron's average contribution stays (the same idea as convert's `compensation`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import VarcompressError
from ..models.var import VAR, teacher_force_with_hooks, with_uncond
from ..var_io import build_var


def _ffns(var) -> list:
    ffns = [getattr(blk, "ffn", None) for blk in var.blocks]
    if any(f is None or not hasattr(f, "fc1") or not hasattr(f, "fc2") for f in ffns):
        raise VarcompressError("neuron pruning needs a dense VAR (blocks with ffn.fc1 / ffn.fc2); "
                               "got an activated or unknown model")
    return ffns


@dataclass
class ActivationStats:
    """Per block: sum of squares and sum of every FFN neuron's GELU output over `tokens` tokens."""
    sumsq: list[torch.Tensor]
    total: list[torch.Tensor]
    tokens: int

    def norms(self) -> list[torch.Tensor]:
        return [s.sqrt() for s in self.sumsq]

    def means(self) -> list[torch.Tensor]:
        return [t / max(self.tokens, 1) for t in self.total]


@torch.no_grad()
def activation_stats(var, labels: torch.Tensor, x: torch.Tensor, batch: int = 8) -> ActivationStats:
    """Teacher-forced pass over (labels, x), each sample also with the unconditional label (CFG rows)."""
    ffns = _ffns(var)
    labels, x = with_uncond(var, labels.long(), x.float())
    sumsq = [torch.zeros(f.fc1.out_features, dtype=torch.float64) for f in ffns]
    total = [torch.zeros(f.fc1.out_features, dtype=torch.float64) for f in ffns]
    count = [0]

    def hook(b):
        def fn(_m, _inp, out):
            a = out.detach().reshape(-1, out.shape[-1]).double().cpu()
            sumsq[b] += a.pow(2).sum(0)
            total[b] += a.sum(0)
            if b == 0:
                count[0] += a.shape[0]
        return fn

    teacher_force_with_hooks(var, labels, x, [f.act.register_forward_hook(hook(b)) for b, f in enumerate(ffns)], batch)
    return ActivationStats(sumsq, total, count[0])


@torch.no_grad()
def neuron_scores(var, score: str, stats: ActivationStats | None = None) -> list[torch.Tensor]:
    """Importance of every FFN neuron, one (hidden,) tensor per block; higher = keep."""
    out = []
    for b, f in enumerate(_ffns(var)):
        w1, w2 = f.fc1.weight.detach().double().cpu(), f.fc2.weight.detach().double().cpu()
        if score == "magnitude":
            out.append(w1.norm(dim=1) * w2.norm(dim=0))
        elif score == "wanda":
            if stats is None:
                raise VarcompressError("wanda scores need calibration activations")
            out.append(stats.norms()[b] * w2.abs().sum(0))
        else:
            raise VarcompressError(f"unknown neuron score {score!r} (magnitude | wanda)")
    return out


def select_neurons(scores: list[torch.Tensor], keep: int) -> list[torch.Tensor]:
    """The `keep` highest-scoring neurons of every block, in their original order (stable ties)."""
    out = []
    for s in scores:
        if not 1 <= keep <= s.numel():
            raise VarcompressError(f"cannot keep {keep} of {s.numel()} FFN neurons")
        order = torch.sort(s, descending=True, stable=True).indices
        out.append(order[:keep].sort().values)
    return out


@torch.no_grad()
def prune_neurons(var, keep_idx: list[torch.Tensor], means: list[torch.Tensor] | None = None) -> VAR:
    """A new VAR whose block b keeps FFN neurons keep_idx[b] (same count in every block); `var` is untouched.

    With `means` (per-block mean GELU outputs) the removed neurons' mean contribution is
    folded into fc2.bias.
    """
    ffns = _ffns(var)
    widths = {int(k.numel()) for k in keep_idx}
    if len(keep_idx) != len(ffns) or len(widths) != 1:
        raise VarcompressError("keep_idx needs one index set per block, all of the same size")
    h, C = widths.pop(), var.cfg.embed_dim
    cfg = type(var.cfg).from_dict({**var.cfg.to_dict(), "mlp_ratio": h / C})
    if round(C * cfg.mlp_ratio) != h:
        raise VarcompressError(f"width {h} is not representable as mlp_ratio * {C}")
    sd = {k: v.detach().clone() for k, v in var.state_dict().items()}
    for b, (f, idx) in enumerate(zip(ffns, keep_idx)):
        p = f"blocks.{b}.ffn."
        idx = idx.to(f.fc1.weight.device)
        sd[p + "fc1.weight"] = f.fc1.weight[idx].clone()
        sd[p + "fc1.bias"] = f.fc1.bias[idx].clone()
        sd[p + "fc2.weight"] = f.fc2.weight[:, idx].clone()
        bias = f.fc2.bias.detach().clone()
        if means is not None:
            removed = torch.ones(f.fc1.out_features, dtype=torch.bool, device=idx.device)
            removed[idx] = False
            mu = means[b].to(f.fc2.weight.device, torch.float64)
            bias += (f.fc2.weight.double()[:, removed] @ mu[removed]).to(bias.dtype)
        sd[p + "fc2.bias"] = bias
    dev = var.pos_1LC.device
    model = build_var(cfg, device=dev)
    model.load_state_dict(sd, strict=True)
    return model.eval().attach_vae(var.vae)
