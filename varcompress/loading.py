"""`varcompress.load`: one loader for every model the toolkit writes or reads."""
from __future__ import annotations

import os
from pathlib import Path


def load(path: str | os.PathLike, vae=None):
    """A model directory (activated: model.safetensors + config.json) or an official VAR file."""
    p = Path(path)
    if p.is_dir():
        from .convert.api import load_activated

        return load_activated(p, vae=vae)
    from .var_io import load_var

    return load_var(p, vae=vae)
