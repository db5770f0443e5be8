"""`--flops-target R`: choose per-block top_k and per-scale keep ratios to keep <= R of dense FLOPs.

FLOPs are the analytic transformer FLOPs of cached generation (`ActivatedVAR.flops`),
so every candidate is priced exactly and for free. Two allocators:
- "uniform": one top_k for all blocks and one keep ratio on the last `sparse_scales`
  scales; among the combinations meeting R, those within 2% of the largest feasible
  FLOPs, the one splitting the saving most evenly between experts and tokens.
- "sensitivity": measure, on calibration tokens (teacher forcing), the KL increase to
  the teacher of each single knob level (one block's top_k, one scale's keep ratio;
  everything else dense; a block's probes start from that block's cached input), then greedily lower the knob with the smallest KL increase
  per FLOP saved (additive model) until R is met.
"""
from __future__ import annotations

import torch
from tqdm import tqdm

from ..activated.model import ActivatedVAR
from ..errors import VarcompressError
from ..metrics.kl import log_probs, token_kl
from .calibrate import bar_off

KEEP_LEVELS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)


@torch.no_grad()
def kl_to_teacher(model, labels: torch.Tensor, x: torch.Tensor, t_logits: torch.Tensor, batch: int = 8) -> float:
    """Mean over tokens of KL(teacher || model) of teacher-forced next-token distributions."""
    tot, n = 0.0, 0
    for i in range(0, labels.shape[0], batch):
        lp = log_probs(model(labels[i:i + batch], x[i:i + batch]))
        tot, n = _kl_add(tot, n, lp, t_logits[i:i + batch])
    return tot / n


def _kl_add(tot: float, n: int, lp: torch.Tensor, t: torch.Tensor) -> tuple[float, int]:
    return tot + float(token_kl(log_probs(t), lp).sum()), n + lp.shape[0] * lp.shape[1]


class _BlockInputs:
    """Teacher-forced hidden states entering one block, batch by batch, under the dense knobs.

    A probe of block b starts here instead of at the embedding: the blocks before b are
    unchanged by it, so their (identical) outputs are computed once, not once per probe.
    The batches and every operation are those of `kl_to_teacher`, so the KL is the same.
    """

    def __init__(self, model, labels: torch.Tensor, x: torch.Tensor, batch: int = 8):
        self.model, self.b = model, 0
        self.bias, self.scales = model.attn_bias_for_masking, (0, len(model.patch_nums))
        parts = [model.embed_inputs(labels[i:i + batch], x[i:i + batch]) for i in range(0, labels.shape[0], batch)]
        self.h, self.cond = [p[0] for p in parts], [p[1] for p in parts]

    def kl(self, t_logits: torch.Tensor) -> float:
        """KL to the teacher of the model as its knobs are now, running blocks b.. from here."""
        tot, n, i = 0.0, 0, 0
        for h, cond in zip(self.h, self.cond):
            for block in self.model.blocks[self.b:]:
                h = block(h, cond, self.bias, self.scales)
            lp = log_probs(self.model.get_logits(h, cond))
            tot, n = _kl_add(tot, n, lp, t_logits[i:i + h.shape[0]])
            i += h.shape[0]
        return tot / n

    def advance(self) -> None:
        """Move to the next block's input (call with the dense knobs set)."""
        block = self.model.blocks[self.b]
        self.h = [block(h, c, self.bias, self.scales) for h, c in zip(self.h, self.cond)]
        self.b += 1


def _fraction(model: ActivatedVAR, ks: list[int], keep: list[float]) -> float:
    model.set_top_k(list(ks))
    model.set_keep(list(keep))
    return model.budget()["fraction"]


def _sparse(model: ActivatedVAR) -> list[int]:
    S = len(model.patch_nums)
    return list(range(S - min(model.convert_cfg.sparse_scales, S), S))


def allocate_uniform(model: ActivatedVAR, target: float) -> tuple[list[int], list[float]]:
    cfg, depth, S = model.convert_cfg, len(model.blocks), len(model.patch_nums)
    lo = 0 if cfg.shared_experts else 1
    sparse, cands = _sparse(model), []
    for k in range(cfg.routed_experts, lo - 1, -1):
        for r in (1.0,) + KEEP_LEVELS:
            keep = [r if s in sparse else 1.0 for s in range(S)]
            f = _fraction(model, [k] * depth, keep)
            if f <= target + 1e-9:
                cands.append((f, abs(k / cfg.routed_experts - r), k, keep))
    if not cands:
        raise VarcompressError(f"flops_target {target} is below what the uniform allocation can reach")
    best_f = max(c[0] for c in cands)
    f, _, k, keep = min((c for c in cands if c[0] >= best_f - 0.02), key=lambda c: c[1])
    _fraction(model, [k] * depth, keep)
    return [k] * depth, keep


@torch.no_grad()
def measure_sensitivity(model: ActivatedVAR, labels, x, t_logits, progress: bool = False) -> dict:
    """KL to the teacher for each single-knob level, all other knobs dense.

    Block probes start from the cached input of the probed block (`_BlockInputs`); scale
    probes change every block, so they start from the embedding.
    """
    cfg, depth, S = model.convert_cfg, len(model.blocks), len(model.patch_nums)
    lo, E = (0 if cfg.shared_experts else 1), cfg.routed_experts
    dense_k, dense_keep = [E] * depth, [1.0] * S
    sparse = _sparse(model)
    total = 1 + depth * (E - lo) + len(sparse) * len(KEEP_LEVELS)
    with tqdm(total=total, desc="convert: sensitivity probes", unit="probe", disable=bar_off(progress)) as bar:
        _fraction(model, dense_k, dense_keep)
        start = _BlockInputs(model, labels, x)
        base = start.kl(t_logits)
        bar.update(1)
        inputs = _BlockInputs(model, labels, x)
        block_kl = []
        for b in range(depth):
            row = {E: base}
            for k in range(E - 1, lo - 1, -1):
                bar.set_postfix_str(f"block {b} top-k {k}")
                _fraction(model, dense_k[:b] + [k] + dense_k[b + 1:], dense_keep)
                row[k] = inputs.kl(t_logits)
                bar.update(1)
            block_kl.append(row)
            _fraction(model, dense_k, dense_keep)
            if b + 1 < depth:
                inputs.advance()
        del inputs
        scale_kl = {}
        for s in sparse:
            row = {1.0: base}
            for r in KEEP_LEVELS:
                bar.set_postfix_str(f"scale {s} keep {r}")
                _fraction(model, dense_k, [r if t == s else 1.0 for t in range(S)])
                row[r] = start.kl(t_logits)
                bar.update(1)
            scale_kl[s] = row
    _fraction(model, dense_k, dense_keep)
    return {"base": base, "block": block_kl, "scale": scale_kl}


def allocate_sensitivity(model: ActivatedVAR, target: float, sens: dict) -> tuple[list[int], list[float]]:
    cfg, depth, S = model.convert_cfg, len(model.blocks), len(model.patch_nums)
    lo = 0 if cfg.shared_experts else 1
    ks, keep = [cfg.routed_experts] * depth, [1.0] * S
    levels = (1.0,) + KEEP_LEVELS
    f = _fraction(model, ks, keep)
    while f > target + 1e-9:
        best = None
        for b in range(depth):
            if ks[b] > lo:
                nk = ks[:b] + [ks[b] - 1] + ks[b + 1:]
                dkl = sens["block"][b][ks[b] - 1] - sens["block"][b][ks[b]]
                best = _better(best, model, f, dkl, nk, keep)
        for s, row in sens["scale"].items():
            i = levels.index(keep[s])
            if i + 1 < len(levels):
                nkeep = keep[:s] + [levels[i + 1]] + keep[s + 1:]
                best = _better(best, model, f, row[levels[i + 1]] - row[keep[s]], ks, nkeep)
        if best is None:
            raise VarcompressError(f"flops_target {target} is below what the sensitivity allocation can reach")
        _, ks, keep = best
        f = _fraction(model, ks, keep)
    return _give_back(model, target, sens, ks, keep, levels)


def _give_back(model, target, sens, ks, keep, levels):
    """Greedy overshoots by up to one step: raise knobs back (largest KL decrease first) while R holds."""
    while True:
        best = None
        for b in range(len(ks)):
            if ks[b] < model.convert_cfg.routed_experts:
                nk = ks[:b] + [ks[b] + 1] + ks[b + 1:]
                gain = sens["block"][b][ks[b]] - sens["block"][b][ks[b] + 1]
                if _fraction(model, nk, keep) <= target + 1e-9 and (best is None or gain > best[0]):
                    best = (gain, nk, keep)
        for s, row in sens["scale"].items():
            i = levels.index(keep[s])
            if i > 0:
                nkeep = keep[:s] + [levels[i - 1]] + keep[s + 1:]
                gain = row[keep[s]] - row[levels[i - 1]]
                if _fraction(model, ks, nkeep) <= target + 1e-9 and (best is None or gain > best[0]):
                    best = (gain, ks, nkeep)
        if best is None:
            _fraction(model, ks, keep)
            return ks, keep
        _, ks, keep = best


def _better(best, model, f, dkl, ks, keep):
    saved = f - _fraction(model, ks, keep)
    if saved <= 0:
        return best
    cost = max(dkl, 0.0) / saved
    return (cost, list(ks), list(keep)) if best is None or cost < best[0] else best


def allocate(model: ActivatedVAR, target: float, method: str, calib=None, t_logits=None,
             progress: bool = False) -> dict:
    """Set the model's knobs to meet `target`; returns the allocation and its measured numbers."""
    if method == "uniform" or calib is None:
        ks, keep = allocate_uniform(model, target)
        info = {"method": "uniform"}
    else:
        sens = measure_sensitivity(model, *calib, t_logits, progress=progress)
        ks, keep = allocate_sensitivity(model, target, sens)
        info = {"method": "sensitivity", "sensitivity": sens}
    _fraction(model, ks, keep)
    info.update(top_k=ks, keep_ratio=keep, fraction=model.budget()["fraction"])
    return info
