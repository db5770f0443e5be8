"""`varcompress.load`: one loader for every model the toolkit writes or reads."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import VarcompressError


def is_distill_run(path: str | os.PathLike) -> bool:
    """A distill run's output folder, finished or not: its resolved recipe beside ckpt/ or student/.

    (The student folder holds a copy of the recipe too, but neither subfolder.)
    """
    p = Path(path)
    return (p / "recipe.resolved.yaml").is_file() and ((p / "ckpt").is_dir() or (p / "student").is_dir())


def model_dir(path: str | os.PathLike) -> Path:
    """A distill run directory with a saved student stands for that student; any other path for itself."""
    p = Path(path)
    if is_distill_run(p) and (p / "student" / "config.json").is_file():
        return p / "student"
    return p


def load(path: str | os.PathLike, vae=None):
    """An exported, activated or pruned model directory, a finished distill run (its student),
    or an official-format VAR file. The model comes back in eval mode; pass the VQVAE to
    enable generation.
    """
    p = model_dir(path)
    if p.is_dir():
        from .export import is_export_dir, load_export

        if is_export_dir(p):
            return load_export(p, vae=vae)
        if (p / "prune.json").is_file():
            from .prune.io import load_pruned

            return load_pruned(p, vae=vae)[0]
        if (p / "config.json").is_file():
            from .convert.api import load_activated

            return load_activated(p, vae=vae)
        raise VarcompressError(f"{p}: not a model directory (no config.json or prune.json)")
    from .var_io import load_var

    return load_var(p, vae=vae)
