"""What `export` accepts, turned into an `Exportable`: the model and what is known of its origin.

Accepted: a testbed name, a dense VAR file (.pth / .safetensors), an activated-model
directory (convert), a pruned-model directory (prune), a finished distill run directory
(its `student/`, recipe and metrics), or an earlier export.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import sha256_file
from ..distill.recipe import parse_recipe, read_yaml
from ..errors import VarcompressError
from ..formats.activated import load_activated, read_activated_config
from ..formats.export import Exportable, load_export, read_export_config, vae_fingerprint
from ..formats.pruned import load_pruned
from ..loading import dir_kind
from ..resolve import TESTBED_NAMES, default_sampling, load_vae_for
from ..testbed.teachers import load_teacher, teacher_paths
from ..var_io import load_var


def open_source(spec: str, vae_path: str | Path | None = None) -> tuple[Exportable, dict | None]:
    """(what to export, its sampling defaults) for anything `export` accepts."""
    path = Path(spec)
    if spec in TESTBED_NAMES and not path.exists():
        return _testbed(spec, vae_path)
    if not path.exists():
        raise VarcompressError(f"{spec}: no such file or directory (nor a testbed name: {', '.join(TESTBED_NAMES)})")
    if path.is_file():
        return _dense_file(path, vae_path)
    read = {"export": _export, "distill": _distill_run, "pruned": _pruned, "activated": _activated}.get(dir_kind(path))
    if read is not None:
        return read(path, vae_path)
    raise VarcompressError(f"{path}: not a model directory (no config.json, prune.json or distill run)")


def _vae(vae_path, testbed: str | None, model):
    """The VQVAE to fingerprint: the one given, else the testbed's, else none."""
    if vae_path is None and testbed is None:
        return None
    vae = load_vae_for(vae_path, testbed, "export", model.patch_nums)
    model.attach_vae(vae)  # refuses a VQVAE whose vocabulary or Cvae does not fit
    return vae


def _finish(ex: Exportable, testbed: str | None, vae_path, sampling: dict | None) -> tuple[Exportable, dict | None]:
    vae = _vae(vae_path, testbed, ex.model)
    if vae is not None:
        ex.vae_fingerprint = vae_fingerprint(vae)
        ex.model.attach_vae(None)
    if testbed is not None:
        ex.source.setdefault("testbed", testbed)
    return ex, sampling or default_sampling(testbed)


def _testbed(name: str, vae_path):
    var, _ = load_teacher(name)
    f = teacher_paths(name)["var"]
    return _finish(Exportable(var, {"input": "testbed", "checkpoint": f.name, "sha256": sha256_file(f)}),
                   name, vae_path, None)


def _dense_file(path: Path, vae_path):
    model = load_var(path)
    return _finish(Exportable(model, {"input": "dense", "checkpoint": str(path), "sha256": sha256_file(path)}),
                   None, vae_path, None)


def _activated(path: Path, vae_path, recipe: dict | None = None):
    cfg = read_activated_config(path)
    source = dict(cfg.get("source") or {})
    source.update(input="activated", sha256=cfg.get("source_sha256"))
    if recipe is None and (path / "recipe.resolved.yaml").is_file():
        recipe = _read_recipe(path / "recipe.resolved.yaml")
    ex = Exportable(load_activated(path), source, recipe=recipe)
    return _finish(ex, source.get("testbed") or _recipe_testbed(recipe), vae_path, _recipe_sampling(recipe))


def _pruned(path: Path, vae_path):
    model, info = load_pruned(path)
    source = dict(info.get("source") or {})
    source["input"] = "pruned"
    pruning = {k: v for k, v in info.items() if k not in ("format", "format_version", "varcompress_version",
                                                          "files", "source")}
    return _finish(Exportable(model, source, pruning=pruning), source.get("testbed"), vae_path, None)


def _distill_run(path: Path, vae_path):
    if not (path / "result.json").is_file() or not (path / "student").is_dir():
        raise VarcompressError(f"{path}: an unfinished distill run (no result.json); run `varcompress distill` "
                               "again to finish it, then export")
    recipe = _read_recipe(path / "recipe.resolved.yaml")
    ex, sampling = _activated(path / "student", vae_path or recipe["teacher"].get("vae"), recipe)
    try:
        result = json.loads((path / "result.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VarcompressError(f"{path}/result.json: invalid JSON ({e})") from None
    ex.metrics = result.get("models") if isinstance(result, dict) else None
    ex.source.update(input="distill", run=str(path), checkpoint=recipe["teacher"]["checkpoint"])
    return ex, sampling


def _export(path: Path, vae_path):
    cfg = read_export_config(path)
    ex = Exportable(load_export(path), dict(cfg.get("source") or {}), cfg.get("recipe"), cfg.get("metrics"),
                    cfg.get("pruning"), cfg.get("vae_fingerprint"))
    if vae_path is None:
        return ex, cfg.get("sampling")
    return _finish(ex, None, vae_path, cfg.get("sampling"))


def _read_recipe(path: Path) -> dict:
    return parse_recipe(read_yaml(path.read_text(), str(path)), str(path))


def _recipe_testbed(recipe: dict | None) -> str | None:
    if recipe is None:
        return None
    spec = recipe["teacher"]["checkpoint"]
    return spec if spec in TESTBED_NAMES and not Path(spec).exists() else None


def _recipe_sampling(recipe: dict | None) -> dict | None:
    if recipe is None or recipe["data"].get("cfg") is None:
        return None
    return {k: recipe["data"][k] for k in ("cfg", "top_k", "top_p")}

