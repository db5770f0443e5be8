"""Calibration data: the teacher's token maps and its activations captured block by block.

The maps are drawn by `generate.tokens.draw_token_maps` through the engine (float32, no
decoder pass; uniformly random labels). Calibration runs teacher forcing on (labels, x) with
every sample also given the unconditional label (CFG runs both rows at generation time).
Hidden states of all samples advance block by block, so memory holds one (N, L, C) state plus
one block's captures, never all blocks' activations at once. A fixed random subset of token
positions (the same for every block) is captured for fitting.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ..activated.build import BlockCapture
from ..activated.token_path import Reconstruction, skip_bases
from ..errors import VarcompressError
from ..generate.tokens import draw_token_maps
from ..models.sampler import OFFICIAL_SAMPLING


def calibration_data(var, n: int, seed: int = 0, cfg: float = OFFICIAL_SAMPLING["cfg"],
                     top_k: int = OFFICIAL_SAMPLING["top_k"], top_p: float = OFFICIAL_SAMPLING["top_p"],
                     batch: int = 16, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """n teacher token maps (labels drawn from a generator seeded `seed`) as teacher-forcing tensors
    (labels, x_BLCv_wo_first_l) on the model's device, drawn on the engine path; the bar counts tokens,
    so its ETA holds across scales."""
    if var.vae is None:
        raise VarcompressError("convert needs calibration data: pass calib=(labels, x) or attach a VQVAE to the VAR")
    labels = torch.randint(0, var.num_classes, (n,), generator=torch.Generator().manual_seed(seed))
    off = bar_off(progress)
    maps = draw_token_maps(var, labels, seed, cfg, top_k, top_p, batch, path="engine",
                           progress=None if off is None else not off, desc="convert: drawing calibration")
    dev = var.pos_1LC.device
    return maps.labels.to(dev), maps.x.to(dev)


def bar_off(progress: bool) -> bool | None:
    """tqdm's `disable`: off when not asked for, else on only where stderr is a terminal (as distill)."""
    return True if not progress else None


def token_subset(N: int, L: int, T: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """T distinct random (sample, position) pairs out of N*L."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(N * L, generator=g)[:min(T, N * L)].sort().values
    return flat // L, flat % L


@torch.no_grad()
def iterate_teacher_blocks(var, labels: torch.Tensor, x_BLCv: torch.Tensor, fc1_names: list[list[str]],
                           tokens: int, rec: Reconstruction | None, seed: int = 0,
                           batch: int = 8) -> Iterator[tuple[int, BlockCapture]]:
    """Yield (block index, captures) for every block of the dense teacher, in order; `rec` gives
    each captured token's `skip_base` from the block's full update maps (None: not captured,
    for a convert that fits no learned selector)."""
    N = labels.shape[0]
    h, conds = [], []
    for i in range(0, N, batch):
        hb, cb = var.embed_inputs(labels[i:i + batch], x_BLCv[i:i + batch])
        h.append(hb)
        conds.append(cb)
    h, cond = torch.cat(h), torch.cat(conds)
    L = h.shape[1]
    rows, cols = token_subset(N, L, tokens, seed)
    scale = var.lvl_1L[0, cols].cpu()
    bias = var.attn_bias_for_masking
    for b, block in enumerate(var.blocks):
        ffn_caps: dict[str, list[torch.Tensor]] = {name: [] for name in fc1_names[b]}
        hooks, cur = [], {}
        for name in fc1_names[b]:
            mod: nn.Module = block.get_submodule(name)
            hooks.append(mod.register_forward_pre_hook(
                lambda m, args, name=name: cur.__setitem__(name, args[0])))
        out, bases = torch.empty_like(h), []
        try:
            for i in range(0, N, batch):
                out[i:i + batch] = block(h[i:i + batch], cond[i:i + batch], bias, (0, len(var.patch_nums)))
                sel = (rows >= i) & (rows < i + batch)
                r, c = rows[sel] - i, cols[sel]
                for name in fc1_names[b]:
                    ffn_caps[name].append(cur[name][r, c].detach().clone())
                if rec is not None:
                    bases.append(skip_bases(rec, out[i:i + batch] - h[i:i + batch])[r, c])
        finally:
            for hk in hooks:
                hk.remove()
        cap = BlockCapture(x_in=h[rows, cols].clone(), x_out=out[rows, cols].clone(),
                           ffn_in={k: torch.cat(v) for k, v in ffn_caps.items()}, scale=scale,
                           skip_base=torch.cat(bases) if bases else None)
        yield b, cap
        h = out


@torch.no_grad()
def teacher_logits(var, labels: torch.Tensor, x: torch.Tensor, batch: int = 8) -> torch.Tensor:
    return torch.cat([var(labels[i:i + batch], x[i:i + batch]) for i in range(0, labels.shape[0], batch)])
