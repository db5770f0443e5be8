"""Turn what a user typed (a testbed name, a checkpoint file, a model directory) into a model.

The CLI verbs share this, so `eval`, `compare` and `generate` accept the same things.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import VarcompressError
from .formats.export import FORMAT as EXPORT_FORMAT, check_vae
from .loading import dir_kind, load, model_dir
from .models.sampler import OFFICIAL_SAMPLING
from .testbed.datasets import DATASETS, dataset_info
from .testbed.teachers import load_teacher, teacher_card, teacher_paths
from .vae_io import load_vae
from .var_io import load_var

TESTBED_NAMES = tuple(DATASETS)


@dataclass
class LoadedModel:
    var: object
    vae: object
    label: str
    dataset: str | None   # testbed data set the model generates, when known
    kind: str             # "dense" | "activated" | "pruned"


def default_sampling(dataset: str | None, **given) -> dict:
    """The settings a model is sampled with: its testbed card's, else the official ones (a new dict);
    the `given` ones that are not None replace them."""
    card = None
    if dataset:
        card = teacher_card(dataset).get("sampling")
    sampling = dict(card or OFFICIAL_SAMPLING)
    sampling.update({k: v for k, v in given.items() if v is not None})
    return sampling


def load_vae_for(vae_path: str | Path | None, dataset: str | None, what: str, patch_nums=None):
    """The VQVAE a model generates with: the file given, else the testbed's (scale schedule `patch_nums`)."""
    testbed_scales = tuple(dataset_info(dataset)["patch_nums"]) if dataset else None
    if vae_path is not None:
        return load_vae(vae_path, patch_nums=patch_nums or testbed_scales)
    if dataset is not None:
        return load_vae(teacher_paths(dataset)["vae"], patch_nums=testbed_scales)
    raise VarcompressError(f"{what}: pass --vae (the model's VQVAE checkpoint)")


def resolve_model(spec: str | Path, vae: str | Path | None = None, dataset: str | None = None) -> LoadedModel:
    """A testbed name ('shapes'), a model directory (activated / pruned / exported / finished distill
    run) or a VAR .pth."""
    spec_s = str(spec)
    if spec_s in TESTBED_NAMES and not Path(spec_s).exists():
        var, v = load_teacher(spec_s)
        return LoadedModel(var, v, f"{spec_s} teacher", spec_s, "dense")
    path = model_dir(spec_s)
    if path.is_dir():
        card, kind = _dir_card(path)
        source = card.get("source")
        dataset = dataset or (source.get("testbed") if isinstance(source, dict) else None)
        model = load(path)
        v = load_vae_for(vae, dataset, spec_s, model.patch_nums)
        if card.get("format") == EXPORT_FORMAT:
            check_vae(card, v, path)
        return LoadedModel(model.attach_vae(v), v, Path(spec_s).name, dataset, card.get("kind") or kind)
    model = load_var(path)
    v = load_vae_for(vae, dataset, spec_s, model.patch_nums) if (vae is not None or dataset is not None) else None
    return LoadedModel(model.attach_vae(v), v, path.name, dataset, "dense")


def _dir_card(path: Path) -> tuple[dict, str]:
    """(the directory's JSON card, its kind): prune.json for pruned models, else config.json."""
    pruned = dir_kind(path) == "pruned"
    card_path = path / ("prune.json" if pruned else "config.json")
    try:
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        card = {}
    card = card if isinstance(card, dict) else {}
    return ({k: v for k, v in card.items() if k != "kind"} if pruned else card), "pruned" if pruned else "activated"
