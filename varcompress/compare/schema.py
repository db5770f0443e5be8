"""The schema of `compare`'s report.json, as a JSON Schema (draft 2020-12 subset) and a validator.

`REPORT_SCHEMA` is plain JSON Schema, so any JSON Schema tool can check a report; the
built-in `validate_report` implements the subset used here (type incl. type lists,
properties, required, additionalProperties: false, items, enum, const, minimum) and
raises one VarcompressError naming the first offending path. Quality columns are null
when not measured (no testbed data set: accuracy / FID / precision / recall).
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import VarcompressError

SCHEMA_VERSION = 3  # 2: engine columns; 3: training per row, seed spread, fresh-process timing
_NUM, _OPT_NUM = {"type": "number", "minimum": 0}, {"type": ["number", "null"]}
_OPT_LIST = {"type": ["array", "null"], "items": {"type": "number", "minimum": 0}}
TRAINING_SCHEMA: dict = {
    "type": "object", "additionalProperties": False, "required": ["free", "stages", "steps", "seeds", "summary"],
    "properties": {
        "free": {"type": ["boolean", "null"], "description": "true: training-free; null: teacher / unknown"},
        "stages": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "groups", "steps"],
            "properties": {"name": {"type": "string"}, "groups": {"type": "array", "items": {"type": "string"}},
                           "steps": {"type": "integer", "minimum": 0}}}},
        "steps": {"type": "integer", "minimum": 0},
        "seeds": {"type": ["object", "null"], "description": "{run, data}: the training seeds"},
        "summary": {"type": "string"},
    },
}
TIMING_SCHEMA: dict = {
    "type": "object", "additionalProperties": False,
    "required": ["path", "batch", "wall_s", "cpu_s", "wall_all", "cpu_all"],
    "properties": {"path": {"enum": ["eager", "engine"]}, "batch": {"type": "integer", "minimum": 1},
                   "wall_s": {**_OPT_NUM, "description": "median wall-clock s/batch over fresh-process rounds "
                              "(null: the path refuses the model)"},
                   "cpu_s": {**_OPT_NUM, "description": "median process CPU s/batch"},
                   "wall_all": _OPT_LIST, "cpu_all": _OPT_LIST},
}

ROW_SCHEMA: dict = {
    "type": "object",
    "additionalProperties": False,
    "required": ["method", "spec", "kind", "training", "timing", "accuracy_std", "fid_std", "precision_std",
                 "recall_std", "params_total", "params_active_per_token", "gflops",
                 "flops_fraction", "flops_reduction", "latency_s", "throughput_img_s", "engine_latency_s",
                 "engine_throughput_img_s", "accuracy", "fid",
                 "precision", "recall", "kl", "top1", "token_agreement", "psnr_db", "grid", "details"],
    "properties": {
        "method": {"type": "string", "description": "label of the model (row name)"},
        "spec": {"type": "string", "description": "what was loaded: testbed name, directory or .pth"},
        "kind": {"enum": ["teacher", "dense", "activated", "pruned"]},
        "training": TRAINING_SCHEMA,
        "timing": {"type": "array", "items": TIMING_SCHEMA},
        "accuracy_std": {**_OPT_NUM, "description": "sample std over the sampling seeds"},
        "fid_std": _OPT_NUM, "precision_std": _OPT_NUM, "recall_std": _OPT_NUM,
        "params_total": {"type": "integer", "minimum": 0, "description": "stored parameters"},
        "params_active_per_token": {**_NUM, "description": "weights multiplied per generated token, mean over "
                                    "tokens with CFG (linear-layer FLOPs / 2 / tokens; adaLN excluded)"},
        "gflops": {**_NUM, "description": "transformer GFLOPs per image with CFG (varcompress.flops)"},
        "flops_fraction": {**_NUM, "description": "gflops / the teacher's"},
        "flops_reduction": {"type": "number", "description": "1 - flops_fraction"},
        "latency_s": {**_OPT_NUM, "description": "eager path: median wall s/batch at the largest latency batch"},
        "throughput_img_s": {**_OPT_NUM, "description": "largest latency batch / latency_s"},
        "engine_latency_s": {**_OPT_NUM, "description": "the same through varcompress.engine.Engine (null: the "
                             "engine refuses the model)"},
        "engine_throughput_img_s": {**_OPT_NUM, "description": "latency.batch / engine_latency_s"},
        "accuracy": {**_OPT_NUM, "description": "testbed class accuracy (shipped classifier), mean over seeds"},
        "fid": {**_OPT_NUM, "description": "testbed FID (classifier features)"},
        "precision": _OPT_NUM, "recall": _OPT_NUM,
        "kl": {**_OPT_NUM, "description": "teacher-forced KL(teacher || model), nats/token, teacher-drawn maps"},
        "top1": {**_OPT_NUM, "description": "teacher-forced argmax agreement with the teacher"},
        "token_agreement": {**_OPT_NUM, "description": "same seed and class: share of sampled tokens equal"},
        "psnr_db": {**_OPT_NUM, "description": "same seed and class: image PSNR to the teacher (null: identical)"},
        "grid": {"type": ["string", "null"], "description": "PNG (relative path): teacher | model, same classes/seeds"},
        "details": {"type": "object", "description": "free-form: prune / convert info, per-scale metrics"},
    },
}

REPORT_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "varcompress compare report",
    "type": "object",
    "additionalProperties": False,
    "required": ["format", "schema_version", "varcompress_version", "created", "dataset", "teacher", "protocol",
                 "quality_seeds", "latency", "rows", "files"],
    "properties": {
        "format": {"const": "varcompress-compare"},
        "schema_version": {"const": SCHEMA_VERSION},
        "varcompress_version": {"type": "string"},
        "created": {"type": "string", "description": "UTC time, ISO 8601"},
        "dataset": {"type": ["string", "null"]},
        "teacher": {"type": "string", "description": "spec of the teacher every model is compared with"},
        "protocol": {"type": "object", "description": "EvalProtocol (n_per_class, seed, sampling, ...)"},
        "quality_seeds": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "latency": {
            "type": "object", "additionalProperties": False,
            "required": ["batches", "rounds", "warmup", "threads", "device", "fresh_process"],
            "properties": {"batches": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                           "rounds": {"type": "integer", "minimum": 1},
                           "warmup": {"type": "integer", "minimum": 0}, "threads": {"type": "integer", "minimum": 1},
                           "device": {"type": "string"}, "fresh_process": {"type": "boolean"}},
        },
        "rows": {"type": "array", "items": ROW_SCHEMA},
        "files": {
            "type": "object", "additionalProperties": False,
            "required": ["markdown", "csv", "json", "pareto", "pareto_latency", "grids"],
            "properties": {"markdown": {"type": "string"}, "csv": {"type": "string"}, "json": {"type": "string"},
                           "pareto": {"type": ["string", "null"]}, "pareto_latency": {"type": ["string", "null"]},
                           "grids": {"type": "object"}},
        },
    },
}

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is(v: Any, t: str) -> bool:
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return isinstance(v, _TYPES[t])


def _check(v: Any, s: dict, path: str) -> None:
    if "const" in s and v != s["const"]:
        raise VarcompressError(f"report{path}: expected {s['const']!r}, got {v!r}")
    if "enum" in s and v not in s["enum"]:
        raise VarcompressError(f"report{path}: expected one of {s['enum']}, got {v!r}")
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_is(v, t) for t in types):
            raise VarcompressError(f"report{path}: expected {' or '.join(types)}, got {type(v).__name__} {v!r:.60}")
    if "minimum" in s and _is(v, "number") and v < s["minimum"]:
        raise VarcompressError(f"report{path}: expected >= {s['minimum']}, got {v}")
    if isinstance(v, dict):
        for k in s.get("required", []):
            if k not in v:
                raise VarcompressError(f"report{path}: missing key {k!r}")
        props = s.get("properties", {})
        for k, x in v.items():
            if k in props:
                _check(x, props[k], f"{path}.{k}")
            elif s.get("additionalProperties", True) is False:
                raise VarcompressError(f"report{path}: unexpected key {k!r}")
    if isinstance(v, list) and "items" in s:
        for i, x in enumerate(v):
            _check(x, s["items"], f"{path}[{i}]")


def validate_report(report: Any) -> dict:
    """Check `report` against REPORT_SCHEMA; returns it unchanged or raises VarcompressError."""
    _check(report, REPORT_SCHEMA, "")
    return report
