"""`varcompress.load`: one loader for every model the toolkit writes or reads, and the one place that
tells model directories apart (`dir_kind`)."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import VarcompressError
from .formats.activated import load_activated
from .formats.export import is_export_dir, load_export
from .formats.pruned import is_pruned_dir, load_pruned
from .var_io import load_var


def is_distill_run(path: str | os.PathLike) -> bool:
    """A distill run's output folder, finished or not: its resolved recipe beside ckpt/ or student/.

    (The student folder holds a copy of the recipe too, but neither subfolder.)
    """
    p = Path(path)
    return (p / "recipe.resolved.yaml").is_file() and ((p / "ckpt").is_dir() or (p / "student").is_dir())


def dir_kind(path: str | os.PathLike) -> str | None:
    """What a directory holds, by its marker: "export" (config.json of an export), "distill" (a distill
    run, `is_distill_run`), "pruned" (prune.json), "activated" (config.json); None otherwise."""
    p = Path(path)
    if not p.is_dir():
        return None
    if is_export_dir(p):
        return "export"
    if is_distill_run(p):
        return "distill"
    if is_pruned_dir(p):
        return "pruned"
    if (p / "config.json").is_file():
        return "activated"
    return None


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
    if not p.is_dir():
        return load_var(p, vae=vae)
    kind = dir_kind(p)
    if kind == "export":
        return load_export(p, vae=vae)
    if kind == "pruned":
        return load_pruned(p, vae=vae)[0]
    if kind == "activated":
        return load_activated(p, vae=vae)
    raise VarcompressError(f"{p}: not a model directory (no config.json or prune.json)")
