"""`--flops-target R`: choose per-block top_k and keep ratios (per scale, or per block and scale)
to keep <= R of dense FLOPs.

FLOPs are the analytic transformer FLOPs of cached generation (`ActivatedVAR.flops`),
so every candidate is priced exactly and for free. Two allocators:
- "uniform": one top_k for all blocks and one keep ratio on the last `sparse_scales`
  scales; among the combinations meeting R, those within 2% of the largest feasible
  FLOPs, the one splitting the saving most evenly between experts and tokens.
- "sensitivity": measure, on calibration tokens (teacher forcing), the KL increase to
  the teacher of each single knob level (one block's top_k, one scale's keep ratio, or
  with `keep_granularity: block` one (block, scale) keep ratio; everything else dense; a
  block's probes start from that block's cached input), then greedily lower the knob with
  the smallest KL increase per FLOP saved (additive model) until R is met.
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


def _fraction(model: ActivatedVAR, ks: list[int], keep: list) -> float:
    model.set_top_k(list(ks))
    model.set_keep([list(r) for r in keep] if keep and isinstance(keep[0], list) else list(keep))
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


def _only(depth: int, S: int, cells: list[tuple[int, int]], r: float) -> list[list[float]]:
    """Keep ratios [block][scale]: r at `cells`, 1 elsewhere."""
    keep = [[1.0] * S for _ in range(depth)]
    for b, s in cells:
        keep[b][s] = r
    return keep


@torch.no_grad()
def measure_sensitivity(model: ActivatedVAR, labels, x, t_logits, progress: bool = False) -> dict:
    """KL to the teacher for each single-knob level, all other knobs dense.

    Knobs: one block's top_k; one scale's keep ratio in every block ("scale"), or, with
    `keep_granularity: block`, one (block, scale) keep ratio ("cell"). Block and cell probes
    start from the cached input of the probed block (`_BlockInputs`); scale probes change
    every block, so they start from the embedding.
    """
    cfg, depth, S = model.convert_cfg, len(model.blocks), len(model.patch_nums)
    lo, E = (0 if cfg.shared_experts else 1), cfg.routed_experts
    dense_k, dense_keep = [E] * depth, _only(depth, S, [], 1.0)
    sparse, per_block = _sparse(model), cfg.keep_granularity == "block"
    keep_probes = len(sparse) * len(KEEP_LEVELS) * (depth if per_block else 1)
    total = 1 + depth * (E - lo) + keep_probes
    with tqdm(total=total, desc="convert: sensitivity probes", unit="probe", disable=bar_off(progress)) as bar:
        _fraction(model, dense_k, dense_keep)
        start = _BlockInputs(model, labels, x)
        base = start.kl(t_logits)
        bar.update(1)
        inputs = _BlockInputs(model, labels, x)
        block_kl, cell_kl = [], {}
        for b in range(depth):
            row = {E: base}
            for k in range(E - 1, lo - 1, -1):
                bar.set_postfix_str(f"block {b} top-k {k}")
                _fraction(model, dense_k[:b] + [k] + dense_k[b + 1:], dense_keep)
                row[k] = inputs.kl(t_logits)
                bar.update(1)
            block_kl.append(row)
            for s in sparse if per_block else ():
                cell = {1.0: base}
                for r in KEEP_LEVELS:
                    bar.set_postfix_str(f"block {b} scale {s} keep {r}")
                    _fraction(model, dense_k, _only(depth, S, [(b, s)], r))
                    cell[r] = inputs.kl(t_logits)
                    bar.update(1)
                cell_kl[f"{b},{s}"] = cell
            _fraction(model, dense_k, dense_keep)
            if b + 1 < depth:
                inputs.advance()
        del inputs
        scale_kl = {}
        for s in () if per_block else sparse:
            row = {1.0: base}
            for r in KEEP_LEVELS:
                bar.set_postfix_str(f"scale {s} keep {r}")
                _fraction(model, dense_k, _only(depth, S, [(b, s) for b in range(depth)], r))
                row[r] = start.kl(t_logits)
                bar.update(1)
            scale_kl[s] = row
    _fraction(model, dense_k, dense_keep)
    out = {"base": base, "block": block_kl, "scale": scale_kl}
    if per_block:
        out["cell"] = cell_kl
    return out


def _keep_groups(sens: dict, depth: int) -> list[tuple[list[tuple[int, int]], dict]]:
    """The keep knobs the sensitivity measured: (cells moved together, KL per level)."""
    if "cell" in sens:
        return [([tuple(int(v) for v in key.split(","))], row) for key, row in sens["cell"].items()]
    return [([(b, int(s)) for b in range(depth)], row) for s, row in sens["scale"].items()]


def _moved(keep: list[list[float]], cells: list[tuple[int, int]], r: float) -> list[list[float]]:
    out = [list(row) for row in keep]
    for b, s in cells:
        out[b][s] = r
    return out


def allocate_sensitivity(model: ActivatedVAR, target: float, sens: dict) -> tuple[list[int], list]:
    """Greedy: lower the knob with the smallest KL increase per FLOP saved until `target` holds.
    Returns per-block top_k and keep ratios (per scale, or [block][scale] for cell knobs)."""
    cfg, depth, S = model.convert_cfg, len(model.blocks), len(model.patch_nums)
    lo = 0 if cfg.shared_experts else 1
    ks, keep = [cfg.routed_experts] * depth, _only(depth, S, [], 1.0)
    levels, groups = (1.0,) + KEEP_LEVELS, _keep_groups(sens, depth)
    f = _fraction(model, ks, keep)
    while f > target + 1e-9:
        best = None
        for b in range(depth):
            if ks[b] > lo:
                nk = ks[:b] + [ks[b] - 1] + ks[b + 1:]
                dkl = sens["block"][b][ks[b] - 1] - sens["block"][b][ks[b]]
                best = _better(best, model, f, dkl, nk, keep)
        for cells, row in groups:
            i = levels.index(keep[cells[0][0]][cells[0][1]])
            if i + 1 < len(levels):
                best = _better(best, model, f, row[levels[i + 1]] - row[levels[i]], ks,
                               _moved(keep, cells, levels[i + 1]))
        if best is None:
            raise VarcompressError(f"flops_target {target} is below what the sensitivity allocation can reach")
        _, ks, keep = best
        f = _fraction(model, ks, keep)
    ks, keep = _give_back(model, target, sens, ks, keep, levels, groups)
    return ks, (keep if "cell" in sens else keep[0])


def _give_back(model, target, sens, ks, keep, levels, groups):
    """Greedy overshoots by up to one step: raise knobs back (largest KL decrease first) while R holds."""
    while True:
        best = None
        for b in range(len(ks)):
            if ks[b] < model.convert_cfg.routed_experts:
                nk = ks[:b] + [ks[b] + 1] + ks[b + 1:]
                gain = sens["block"][b][ks[b]] - sens["block"][b][ks[b] + 1]
                if _fraction(model, nk, keep) <= target + 1e-9 and (best is None or gain > best[0]):
                    best = (gain, nk, keep)
        for cells, row in groups:
            i = levels.index(keep[cells[0][0]][cells[0][1]])
            if i > 0:
                nkeep = _moved(keep, cells, levels[i - 1])
                gain = row[levels[i]] - row[levels[i - 1]]
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
    return (cost, list(ks), [list(r) for r in keep]) if best is None or cost < best[0] else best


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
