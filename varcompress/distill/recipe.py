"""Distillation recipes: YAML -> one resolved dict (every default filled in), checked strictly.

Sections: teacher, student, data, stages, run, eval (see docs/DISTILL.md). Any unknown key,
wrong type or out-of-range value is one VarcompressError naming the key path, e.g.
`stages[1].lr: expected a positive number, got 'fast'`. `student.convert` is checked by
ConvertConfig itself. YAML is read with `1e-3` parsed as a number (YAML 1.2 style) and
duplicate keys refused.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from ..activated.config import ConvertConfig
from ..errors import VarcompressError
from .schema import REQUIRED, any_of, boolean, choice, fail, integer, list_of, mapping, number, optional, show, string

GROUPS = ("routers", "selectors", "experts", "attention", "modulation", "embeddings", "head", "all")
LOSSES = ("kl", "guided", "feature", "balance", "budget", "router", "selector")

# ---- YAML ------------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _map(loader, node):
    loader.flatten_mapping(node)
    seen = set()
    for k_node, _ in node.value:
        k = loader.construct_object(k_node, deep=True)
        try:
            dup = k in seen
            seen.add(k)
        except TypeError:
            raise VarcompressError(f"line {k_node.start_mark.line + 1}: unhashable key {show(k)}") from None
        if dup:
            raise VarcompressError(f"line {k_node.start_mark.line + 1}: duplicate key {k!r}")
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor("tag:yaml.org,2002:map", _map)


def read_yaml(text: str, source: str = "recipe") -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except VarcompressError as e:
        raise VarcompressError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise VarcompressError(f"{source}: invalid YAML: {getattr(e, 'problem', None) or e}{where}") from None
    except RecursionError:
        raise VarcompressError(f"{source}: invalid YAML: nested too deeply") from None


# ---- the schema --------------------------------------------------------------------------------------------
def _loss(extra: dict | None = None):
    m = mapping({"weight": (number(0), 0.0), **(extra or {})})

    def check(v, path):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = {"weight": v}
        return m(v, path)
    return check


_blocks = any_of(choice("all"), list_of(integer(0), 1), what="'all' or a list of block indices")
LOSS_SCHEMA = {
    "kl": (_loss({"temperature": (number(0, lo_open=True), 1.0), "scales": (choice("token", "scale"), "token")}),
           None),
    "guided": (_loss({"cfg": (optional(number(0)), None)}), None),
    "feature": (_loss({"blocks": (_blocks, "all")}), None),
    "balance": (_loss(), None), "budget": (_loss(), None), "router": (_loss(), None), "selector": (_loss(), None),
}
RELAX = {"router": (choice("st", "gumbel", "off"), "st"), "selector": (choice("st", "off"), "st"),
         "temperature": (number(0, lo_open=True), 1.0)}
STAGE = {
    "name": (optional(string), None),
    "steps": (integer(1), REQUIRED),
    "lr": (number(0, lo_open=True), REQUIRED),
    "warmup": (integer(0), 0),
    "lr_floor": (number(0, 1), 0.05),
    "weight_decay": (number(0), 0.0),
    "grad_clip": (optional(number(0, lo_open=True)), 1.0),
    "train": (list_of(choice(*GROUPS), 1), REQUIRED),
    "relax": (mapping(RELAX), None),
    "losses": (mapping(LOSS_SCHEMA), REQUIRED),
}
DEFAULT_STAGES = [
    {"name": "align", "steps": 100, "lr": 1e-3, "warmup": 10, "train": ["routers", "selectors"],
     "losses": {"kl": 1.0, "router": 0.1}},
    {"name": "joint", "steps": 200, "lr": 1e-4, "warmup": 20, "train": ["experts", "routers", "selectors"],
     "losses": {"kl": 1.0, "feature": 0.1}},
]


def _device(v, path):
    if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", v):
        fail(path, f"expected auto, cpu, cuda or cuda:N, got {show(v)}")
    return v


SCHEMA = {
    "description": (optional(string), None),
    "teacher": (mapping({"checkpoint": (string, REQUIRED), "vae": (optional(string), None)}), REQUIRED),
    "student": (lambda v, p: _student(v, p), None),
    "data": (mapping({
        "source": (choice("teacher", "images"), "teacher"), "count": (optional(integer(1)), 1024),
        "seed": (integer(0), 0), "cfg": (optional(number(0)), None), "top_k": (optional(integer(0)), None),
        "top_p": (optional(number(0, 1)), None), "path": (optional(string), None),
        "shard_size": (integer(1), 256), "cache_dir": (optional(string), None),
        "uncond_prob": (number(0, 1, hi_open=True), 0.1)}), None),
    "stages": (list_of(mapping(STAGE), 1), lambda: copy.deepcopy(DEFAULT_STAGES)),
    "run": (mapping({
        "seed": (integer(0), 0), "batch": (integer(1), 32), "accumulation": (integer(1), 1),
        "precision": (choice("fp32", "bf16"), "fp32"), "eval_every": (integer(0), 0),
        "ckpt_every": (integer(1), 100), "log_every": (integer(1), 1), "out_dir": (string, "runs/distill"),
        "device": (_device, "auto"), "threads": (optional(integer(1)), None), "progress": (boolean, True),
        "ddp_timeout_min": (number(0, lo_open=True), 60.0)}), None),
    "eval": (mapping({
        "n_per_class": (integer(2), 50), "seed": (integer(0), 0), "teacher_maps": (integer(1), 64),
        "same_seed": (integer(1), 32), "held_out": (integer(1), 64), "testbed": (boolean, True),
        "converted": (boolean, True), "teacher": (boolean, True)}), None),
}


def _field_checker(f):
    """A type check from a ConvertConfig field annotation ('int | list[int] | None', ...)."""
    base = {"bool": boolean, "int": integer(), "float": number(), "str": string}
    forms, names = [], []
    for tok in (t.strip() for t in str(f.type).split("|")):
        if tok == "None":
            forms.append(lambda x, p: fail(p, "") if x is not None else None)
        elif tok.startswith("list[") and tok[5:-1] in base:
            forms.append(list_of(base[tok[5:-1]], 1))
        elif tok in base:
            forms.append(base[tok])
        else:
            forms.append(lambda x, p: x)  # unknown annotation: ConvertConfig checks it
        names.append({"None": "null", "float": "a number", "int": "an integer", "bool": "true/false",
                      "str": "a string"}.get(tok, tok.replace("list[float]", "a list of numbers")
                                             .replace("list[int]", "a list of integers")))
    return forms[0] if len(forms) == 1 else any_of(*forms, what=" or ".join(names))


def _convert_fields(v, path):
    fields = dataclasses.fields(ConvertConfig)
    v = mapping({f.name: (_field_checker(f), f.default) for f in fields})(v, path)
    try:
        return ConvertConfig(**v).to_dict()
    except VarcompressError as e:
        field, _, why = str(e).removeprefix("convert config: ").partition(" ")
        fail(f"{path}.{field}", why)
    except (TypeError, ValueError) as e:
        fail(path, f"invalid convert settings ({e})")


def _student(v, path):
    v = mapping({"convert": (optional(lambda x, p: x), None), "from": (optional(string), None)})(v, path)
    if v["convert"] is not None and v["from"] is not None:
        fail(path, "give either convert (build from the teacher) or from (a converted model), not both")
    if v["from"] is None:
        v["convert"] = _convert_fields({} if v["convert"] is None else v["convert"], f"{path}.convert")
    return v


def parse_recipe(d: Any, source: str = "recipe") -> dict:
    """Validate a recipe (a parsed YAML document) and return it resolved (defaults filled in)."""
    if not isinstance(d, dict):
        fail(source, f"expected a mapping at the top level, got {show(d)}")
    r = mapping(SCHEMA)(d, "")
    names = set()
    for i, st in enumerate(r["stages"]):
        p = f"stages[{i}]"
        st["name"] = st["name"] or f"stage{i + 1}"
        if st["name"] in names:
            fail(f"{p}.name", f"duplicate stage name {st['name']!r}")
        names.add(st["name"])
        if st["warmup"] > st["steps"]:
            fail(f"{p}.warmup", f"expected an integer in [0, steps={st['steps']}], got {st['warmup']}")
        if not any(loss["weight"] > 0 for loss in st["losses"].values()):
            fail(f"{p}.losses", "every loss weight is 0 (give at least one, e.g. kl: 1.0)")
    run, data = r["run"], r["data"]
    if run["batch"] % run["accumulation"]:
        fail("run.batch", f"{run['batch']} is not divisible by run.accumulation={run['accumulation']}")
    if data["source"] == "images" and data["path"] is None:
        fail("data.path", "missing (required with source: images: an image folder, one sub-folder per class)")
    if data["source"] == "teacher":
        if data["path"] is not None:
            fail("data.path", "only used with source: images")
        if data["count"] is None:
            fail("data.count", "expected a positive integer with source: teacher, got None")
    return r


def read_yaml_file(path: str | Path):
    """Parse a YAML file; a missing or unreadable file is one VarcompressError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise VarcompressError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise VarcompressError(f"{path}: cannot read ({e})") from None
    return read_yaml(text, str(path))


def load_recipe(path: str | Path, out_dir: str | Path | None = None) -> dict:
    """Read, validate and resolve a recipe file; `out_dir` overrides run.out_dir."""
    path = Path(path)
    d = read_yaml_file(path)
    try:
        r = parse_recipe(d, str(path))
    except VarcompressError as e:
        raise VarcompressError(f"{path}: {e}") from None
    if out_dir is not None:
        r["run"]["out_dir"] = str(out_dir)
    return r


def dump_recipe(r: dict) -> str:
    return yaml.safe_dump(r, sort_keys=False, default_flow_style=None, width=100)


_NOT_MATH = {"run": ("out_dir", "ckpt_every", "eval_every", "log_every", "progress", "device", "threads",
                     "ddp_timeout_min")}


def recipe_hash(r: dict) -> str:
    """Hash of what determines the trained weights (not out_dir, cache, logging, eval or device settings)."""
    d = {k: v for k, v in r.items() if k not in ("eval", "description")}
    d["run"] = {k: v for k, v in r["run"].items() if k not in _NOT_MATH["run"]}
    d["data"] = {k: v for k, v in r["data"].items() if k != "cache_dir"}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
