"""Compare recipes (YAML): which models, against which teacher, under which protocol.

```yaml
dataset: digits                 # testbed data set (testbed metrics); null: teacher-relative only
teacher: digits                 # default: the dataset's shipped teacher (a .pth needs vae:)
vae: null
models:                         # a spec, or {label, model}
  - runs/cmp/act75
  - {label: wanda-ft, model: runs/cmp/wanda75_ft}
eval: {n_per_class: 50, seed: 0, seeds: [0, 1, 2], teacher_maps: 64, same_seed: 32, grid_per_class: 8}
latency: {batches: [1, 16], rounds: 3, warmup: 1, threads: 1}   # each model, path, batch: a fresh process
```
Unknown keys and bad values are one VarcompressError naming the key path.
"""
from __future__ import annotations

from pathlib import Path

from ..distill.recipe import read_yaml_file
from ..distill.schema import REQUIRED, any_of, fail, integer, list_of, mapping, optional, string
from ..errors import VarcompressError
from .api import CompareOptions
from .models import Entry, parse_spec


def _model(v, path):
    if isinstance(v, str):
        return parse_spec(v)
    m = mapping({"label": (optional(string), None), "model": (string, REQUIRED)})(v, path)
    return parse_spec(f"{m['label']}={m['model']}" if m["label"] else m["model"])


SCHEMA = {
    "description": (optional(string), None),
    "dataset": (optional(string), None),
    "teacher": (optional(string), None),
    "vae": (optional(string), None),
    "models": (list_of(any_of(_model, what="a model spec or {label, model}"), 1), REQUIRED),
    "eval": (mapping({"n_per_class": (integer(2), 50), "seed": (integer(0), 0), "seeds": (list_of(integer(0), 1),
                                                                                           [0, 1, 2]),
                      "teacher_maps": (integer(1), 64), "same_seed": (integer(1), 32),
                      "grid_per_class": (integer(1), 8)}), None),
    "latency": (mapping({"batches": (list_of(integer(1), 1), [1, 16]), "rounds": (integer(1), 3),
                         "warmup": (integer(0), 1), "threads": (integer(1), 1)}), None),
}


def load_compare_recipe(path: str | Path) -> tuple[list[Entry], dict, CompareOptions]:
    """(models, {dataset, teacher, vae}, options) from a compare recipe file."""
    path = Path(path)
    d = read_yaml_file(path)
    if not isinstance(d, dict):
        raise VarcompressError(f"{path}: expected a mapping at the top level")
    try:
        r = mapping(SCHEMA)(d, "")
    except VarcompressError as e:
        raise VarcompressError(f"{path}: {e}") from None
    if r["dataset"] is None and r["teacher"] is None:
        try:
            fail("dataset", "give a testbed dataset or a teacher")
        except VarcompressError as e:
            raise VarcompressError(f"{path}: {e}") from None
    opts = CompareOptions(**r["eval"], **r["latency"])
    return r["models"], {k: r[k] for k in ("dataset", "teacher", "vae")}, opts
