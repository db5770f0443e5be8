"""Atomic, resumable training checkpoints.

A run writes `step_XXXXXXX.pt` files atomically and keeps the newest few; a restarted
run continues from the newest one. Batches are a pure function of (seed, step), so a
resumed run sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..checkpoint import atomic_write

_PAT = re.compile(r"step_(\d{7})\.pt$")


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """The random stream for one step: independent of how the run was interrupted."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 131 + stream)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    found = sorted(p for p in run_dir.iterdir() if _PAT.search(p.name))
    return found[-1] if found else None


def save_training_state(run_dir: str | Path, step: int, state: dict, keep: int = 2) -> Path:
    """Write the state for `step` atomically, then prune all but the newest `keep`."""
    run_dir = Path(run_dir)
    path = atomic_write(run_dir / f"step_{step:07d}.pt", lambda tmp: torch.save(state, tmp))
    old = sorted(p for p in run_dir.iterdir() if _PAT.search(p.name))[:-keep]
    for p in old:
        p.unlink(missing_ok=True)
    return path


def load_training_state(path: str | Path) -> dict:
    """Training states hold only tensors, numbers, strings and dicts: weights_only is enough."""
    return torch.load(path, map_location="cpu", weights_only=True)
