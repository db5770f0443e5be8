"""Turn what a user typed (a testbed name, a checkpoint file, a model directory) into a model.

The CLI verbs share this, so `eval`, `compare` and `generate` accept the same things.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import VarcompressError

TESTBED_NAMES = ("shapes", "digits")


@dataclass
class LoadedModel:
    var: object
    vae: object
    label: str
    dataset: str | None   # testbed data set the model generates, when known
    kind: str             # "dense" | "activated" | "pruned"


def load_vae_for(vae_path: str | Path | None, dataset: str | None, what: str):
    from .testbed.datasets import PATCH_NUMS
    from .vae_io import load_vae

    if vae_path is not None:
        return load_vae(vae_path, patch_nums=PATCH_NUMS if dataset else None)
    if dataset is not None:
        from .testbed.teachers import teacher_paths

        return load_vae(teacher_paths(dataset)["vae"], patch_nums=PATCH_NUMS)
    raise VarcompressError(f"{what}: pass --vae (the model's VQVAE checkpoint)")


def resolve_model(spec: str | Path, vae: str | Path | None = None, dataset: str | None = None) -> LoadedModel:
    """A testbed name ('shapes'), a model directory (activated/pruned/exported) or a VAR .pth."""
    from . import load

    spec_s = str(spec)
    if spec_s in TESTBED_NAMES and not Path(spec_s).exists():
        from .testbed.teachers import load_teacher

        var, v = load_teacher(spec_s)
        return LoadedModel(var, v, f"{spec_s} teacher", spec_s, "dense")
    path = Path(spec_s)
    if path.is_dir():
        cfg_path = path / "config.json"
        source = {}
        if cfg_path.exists():
            try:
                source = json.loads(cfg_path.read_text()).get("source") or {}
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                source = {}
        dataset = dataset or source.get("testbed")
        v = load_vae_for(vae, dataset, spec_s)
        model = load(path, vae=v)
        return LoadedModel(model, v, path.name, dataset, getattr(model, "kind", "activated"))
    from .var_io import load_var

    v = load_vae_for(vae, dataset, spec_s) if (vae is not None or dataset is not None) else None
    return LoadedModel(load_var(path, vae=v), v, path.name, dataset, "dense")
