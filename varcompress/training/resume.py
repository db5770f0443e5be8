"""Durable, resumable training checkpoints.

A run writes `step_XXXXXXX.pt` files atomically and durably (fsynced before older ones
are pruned) and keeps the newest few; a restarted run continues from the newest one
that reads and verifies, falling back to the one before it (one warning line) when
the newest is torn. Batches are a pure function of (seed, step), so a resumed run sees
exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

from ..checkpoint import check_finite, read_training_state
from ..durable import atomic_write
from ..errors import VarcompressError

_PAT = re.compile(r"step_(\d{7})\.pt$")


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """The random stream for one step: independent of how the run was interrupted."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 131 + stream)


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if _PAT.search(p.name))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def checkpoint_step(path: Path) -> int:
    return int(_PAT.search(path.name).group(1))


def save_training_state(run_dir: str | Path, step: int, state: dict, keep: int = 2) -> Path:
    """Write the state for `step` durably, then prune all but the newest `keep`."""
    path = atomic_write(Path(run_dir) / f"step_{step:07d}.pt", lambda tmp: torch.save(state, tmp))
    for p in checkpoints(run_dir)[:-keep]:
        p.unlink(missing_ok=True)
    return path


def load_training_state(path: str | Path) -> dict:
    """Training states hold only tensors, numbers, strings and dicts: the weights_only reader is enough."""
    return read_training_state(path)


def verify_state(path: Path, state: dict, required: tuple[str, ...], model_key: str) -> None:
    """A state is usable when it has every key and its model weights are finite tensors."""
    missing = [k for k in required if k not in state]
    if missing:
        raise VarcompressError(f"{path}: incomplete training state (missing {', '.join(missing)})")
    sd = state[model_key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise VarcompressError(f"{path}: {model_key!r} is not a state dict of tensors")
    check_finite(sd, str(path), masks=("attn_bias_for_masking",))


def load_latest(run_dir: str | Path, required: tuple[str, ...], model_key: str,
                warn: bool = True) -> tuple[Path, dict] | None:
    """The newest checkpoint that reads and verifies, as (path, state); None: start from scratch.

    A torn or corrupt newer checkpoint is skipped with one warning line on stderr (it is
    overwritten or pruned when the run passes its step again).
    """
    found = checkpoints(run_dir)
    for i in range(len(found) - 1, -1, -1):
        path = found[i]
        try:
            state = read_training_state(path)
            verify_state(path, state, required, model_key)
        except VarcompressError as e:
            if warn:
                nxt = f"falling back to {found[i - 1].name}" if i else "starting from scratch"
                print(f"warning: {e}; {nxt}", file=sys.stderr)
            continue
        return path, state
    return None
