"""What `compare` (and `prune --match`) accept as a model, and how each kind is loaded.

A spec is one of: a testbed name (`digits`: the shipped teacher), a pruned-model
directory (`prune.json`), a distill run directory (`result.json` + `student/`: the
distilled student), an activated-model directory (`config.json` + `model.safetensors`)
or an official-format VAR `.pth`. On the command line `label=spec` names a model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import sha256_file
from ..errors import VarcompressError
from ..formats.activated import load_activated, read_activated_config
from ..formats.export import load_export, read_export_config
from ..formats.pruned import load_pruned
from ..loading import dir_kind, model_dir
from ..resolve import TESTBED_NAMES, load_vae_for
from ..testbed.teachers import load_teacher, teacher_paths
from ..vae_io import load_vae
from ..var_io import load_var


@dataclass
class Entry:
    label: str
    spec: str


@dataclass
class Model:
    label: str
    spec: str
    var: object
    kind: str            # teacher | dense | activated | pruned
    dataset: str | None
    info: dict


def parse_spec(text: str) -> Entry:
    """`label=spec` or a bare spec (label = the spec's last path part)."""
    if not isinstance(text, str) or not text.strip():
        raise VarcompressError(f"model spec: expected a testbed name or a path, got {text!r}")
    label, sep, spec = text.partition("=")
    if not sep:
        spec, p = text, Path(text)
        label = p.parent.name if p.name in ("student", "var.pth") and p.parent.name else p.name or text
    if not label.strip() or not spec.strip():
        raise VarcompressError(f"model spec {text!r}: expected label=spec")
    return Entry(label.strip(), spec.strip())


def _attach(var, vae, vae_path, dataset, spec: str):
    """Attach the VQVAE: the one given, a .pth (told the VAR's scales), or the dataset teacher's."""
    if vae is None:
        vae = load_vae(vae_path, patch_nums=var.patch_nums) if vae_path is not None else \
            load_vae_for(None, dataset, spec)
    return var.attach_vae(vae)


def load_model(entry: Entry, vae=None, dataset: str | None = None, vae_path=None) -> Model:
    """Load `entry` in eval mode with the VQVAE attached (the dataset's teacher VQVAE by default)."""
    spec = entry.spec
    p = Path(spec)
    if spec in TESTBED_NAMES and not p.exists():
        var, _ = load_teacher(spec)
        return Model(entry.label, spec, var, "teacher", spec, {})
    if not p.exists():
        raise VarcompressError(f"{spec}: no such file or directory (expected a testbed name, a model "
                               "directory or a VAR .pth)")
    kind = dir_kind(p)
    if kind == "pruned":
        var, info = load_pruned(p)
        return Model(entry.label, spec, _attach(var, vae, vae_path, dataset, spec), "pruned", dataset, info)
    if kind == "export":
        cfg = read_export_config(p)
        var = _attach(load_export(p), vae, vae_path, dataset, spec)
        return Model(entry.label, spec, var, cfg["kind"], dataset, {"convert_config": cfg.get("convert_config")})
    if p.is_dir():  # an activated model, or a distill run (its student)
        d = model_dir(p)
        cfg = read_activated_config(d)
        var = _attach(load_activated(d), vae, vae_path, dataset, spec)
        return Model(entry.label, spec, var, "activated", dataset, {"convert_config": cfg.get("convert_config", {})})
    return Model(entry.label, spec, _attach(load_var(p), vae, vae_path, dataset, spec), "dense", dataset, {})


def teacher_sha256(spec: str) -> str:
    """sha256 of the dense teacher's VAR file (testbed name or .pth)."""
    path = teacher_paths(spec)["var"] if spec in TESTBED_NAMES and not Path(spec).exists() else Path(spec)
    if not Path(path).is_file():
        raise VarcompressError(f"{spec}: no such VAR checkpoint")
    return sha256_file(path)
