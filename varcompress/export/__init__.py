"""`varcompress export`: any model -> one deployable directory (model.safetensors + config.json)."""
from __future__ import annotations

import os
from pathlib import Path

from ..durable import check_output
from ..errors import VarcompressError
from ..formats.export import (FORMAT, Exportable, check_vae, is_export_dir, load_export, read_export_config,
                              vae_fingerprint, write_export)
from .sources import open_source


def export_model(spec: str, out: str | os.PathLike, vae: str | Path | None = None, force: bool = False) -> Path:
    """Export what `spec` names (testbed name, VAR file, activated/pruned/distill/export directory) to `out`."""
    out = Path(out)
    check_output(out, force)
    if Path(spec).exists() and out.resolve() == Path(spec).resolve():
        raise VarcompressError(f"{out}: is the input itself; export to another directory")
    ex, sampling = open_source(str(spec), vae)
    return write_export(ex, out, sampling=sampling, force=force)


__all__ = ["FORMAT", "Exportable", "check_vae", "export_model", "is_export_dir", "load_export", "open_source",
           "read_export_config", "vae_fingerprint", "write_export"]
