"""Pruned-model directories: written atomically (temporary directory + rename), loaded back exactly.

DIR/prune.json   format, method, config, FLOPs (teacher / model / fraction / target), source, fine-tuning
DIR/var.pth      neuron pruning: a plain official-format VAR state dict (smaller mlp_ratio);
                 `varcompress.load_var(DIR/var.pth)` and the official code load it as is
DIR/model.safetensors + DIR/config.json
                 token pruning (and both): convert's activated-model format; `varcompress.load(DIR)`
DIR/teacher.pth + DIR/small.pth
                 scale split: both models in the official format; prune.json's split_scale joins them
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..activated.model import ActivatedVAR
from ..checkpoint import read_format_json, save_state_dict
from ..durable import atomic_dir
from ..errors import VarcompressError
from ..models.scale_split import ScaleSplitVAR
from ..var_io import load_var
from ..version import __version__
from .activated import load_activated, write_activated_files

FORMAT = "varcompress-pruned"
FORMAT_VERSION = 1
VAR_FILE = "var.pth"
SPLIT_FILES = ("teacher.pth", "small.pth")


def is_pruned_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "prune.json").is_file()


def save_pruned(model, info: dict, out_dir: str | os.PathLike, source: dict | None = None,
                finetune: dict | None = None, force: bool = False) -> Path:
    """Write DIR (see the module doc); refuse to overwrite an existing DIR unless force."""
    with atomic_dir(out_dir, force) as tmp:
        if isinstance(model, ActivatedVAR):
            write_activated_files(model, tmp, source_sha256=(source or {}).get("sha256"), source=source)
            files = ["model.safetensors", "config.json"]
        elif isinstance(model, ScaleSplitVAR):
            for name, m in zip(SPLIT_FILES, (model.large, model.small)):
                save_state_dict(m.state_dict(), tmp / name)
            files = list(SPLIT_FILES)
        else:
            save_state_dict(model.state_dict(), tmp / VAR_FILE)
            files = [VAR_FILE]
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "varcompress_version": __version__,
                "files": files, "source": source or {}, "finetune": finetune, **info}
        (tmp / "prune.json").write_text(json.dumps(meta, indent=1) + "\n")
    return Path(out_dir)


def read_prune_info(path: str | os.PathLike) -> dict:
    p = Path(path) / "prune.json"
    if not p.is_file():
        raise VarcompressError(f"{path}: not a pruned-model directory (no prune.json)")
    return read_format_json(p, FORMAT, FORMAT_VERSION, "pruned model")


def load_pruned(path: str | os.PathLike, vae=None):
    """(model, info): the pruned model in eval mode (VQVAE attached when given)."""
    info = read_prune_info(path)
    d = Path(path)
    if VAR_FILE in info.get("files", []):
        model = load_var(d / VAR_FILE, vae=vae)
    elif SPLIT_FILES[1] in info.get("files", []):
        if not isinstance(info.get("split_scale"), int):
            raise VarcompressError(f"{path}: prune.json lacks the split_scale of its scale-split model")
        model = ScaleSplitVAR(*(load_var(d / n, vae=vae) for n in SPLIT_FILES), info["split_scale"]).eval()
    else:
        model = load_activated(d, vae=vae)
    return model, info
