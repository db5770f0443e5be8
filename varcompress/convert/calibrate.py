"""Calibration data: drawing teacher token maps and capturing teacher activations block by block.

Calibration runs teacher forcing on (labels, x) with every sample also given the
unconditional label (CFG runs both rows at generation time). Hidden states of all
samples advance block by block, so memory holds one (N, L, C) state plus one block's
captures, never all blocks' activations at once. A fixed random subset of token
positions (the same for every block) is captured for fitting.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from ..errors import VarcompressError
from ..sampling import OFFICIAL_SAMPLING


@dataclass
class BlockCapture:
    """Teacher activations of one block at the captured tokens (T rows)."""
    x_in: torch.Tensor        # (T, C) block input
    x_out: torch.Tensor       # (T, C) block output
    ffn_in: dict[str, torch.Tensor]  # fc1 qualname -> (T, C) FFN input
    scale: torch.Tensor       # (T,) scale index of each token


@torch.no_grad()
def draw_calibration(var, n: int, seed: int = 0, cfg: float = OFFICIAL_SAMPLING["cfg"],
                     top_k: int = OFFICIAL_SAMPLING["top_k"], top_p: float = OFFICIAL_SAMPLING["top_p"],
                     batch: int = 16, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample n token maps with the teacher; return teacher-forcing tensors (labels, x_BLCv_wo_first_l).

    Drawn through the engine in float32 without decoding images (only the tokens are used);
    the bar counts tokens, so its ETA holds across scales.
    """
    if var.vae is None:
        raise VarcompressError("convert needs calibration data: pass calib=(labels, x) or attach a VQVAE to the VAR")
    from ..engine import Engine  # here, not at the top: the engine imports convert.router (a cycle)

    dev = var.pos_1LC.device
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, var.num_classes, (n,), generator=g).to(dev)
    eng = Engine(var, dtype=torch.float32, device=dev)
    xs = []
    with tqdm(total=n * var.L, desc="convert: drawing calibration", unit="tok", disable=bar_off(progress)) as bar:
        for i in range(0, n, batch):
            lb = labels[i:i + batch]
            _, idx = eng.generate(lb.shape[0], lb, g_seed=seed + i, cfg=cfg, top_k=top_k, top_p=top_p,
                                  return_idx=True, decode=False,
                                  logits_hook=lambda si, logits: bar.update(logits.shape[0] * logits.shape[1]))
            xs.append(var.vae.idxBl_to_var_input(idx))
    return labels, torch.cat(xs)


def bar_off(progress: bool) -> bool | None:
    """tqdm's `disable`: off when not asked for, else on only where stderr is a terminal (as distill)."""
    return True if not progress else None


def with_uncond(var, labels: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample twice: with its label and with the unconditional one (CFG's second row)."""
    return torch.cat((labels, torch.full_like(labels, var.num_classes))), torch.cat((x, x))


def token_subset(N: int, L: int, T: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """T distinct random (sample, position) pairs out of N*L."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(N * L, generator=g)[:min(T, N * L)].sort().values
    return flat // L, flat % L


@torch.no_grad()
def iterate_teacher_blocks(var, labels: torch.Tensor, x_BLCv: torch.Tensor, fc1_names: list[list[str]],
                           tokens: int, seed: int = 0, batch: int = 8) -> Iterator[tuple[int, BlockCapture]]:
    """Yield (block index, captures) for every block of the dense teacher, in order."""
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
        out = torch.empty_like(h)
        try:
            for i in range(0, N, batch):
                out[i:i + batch] = block(h[i:i + batch], cond[i:i + batch], bias, (0, len(var.patch_nums)))
                sel = (rows >= i) & (rows < i + batch)
                r, c = rows[sel] - i, cols[sel]
                for name in fc1_names[b]:
                    ffn_caps[name].append(cur[name][r, c].detach().clone())
        finally:
            for hk in hooks:
                hk.remove()
        cap = BlockCapture(x_in=h[rows, cols].clone(), x_out=out[rows, cols].clone(),
                           ffn_in={k: torch.cat(v) for k, v in ffn_caps.items()}, scale=scale)
        yield b, cap
        h = out


@torch.no_grad()
def teacher_logits(var, labels: torch.Tensor, x: torch.Tensor, batch: int = 8) -> torch.Tensor:
    return torch.cat([var(labels[i:i + batch], x[i:i + batch]) for i in range(0, labels.shape[0], batch)])
