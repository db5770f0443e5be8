"""report.json schema: a JSON Schema dict, and the built-in validator accepts good reports and names bad paths."""
from __future__ import annotations

import copy
import csv
import json

import pytest

from varcompress.compare import REPORT_SCHEMA, ROW_SCHEMA, SCHEMA_VERSION, validate_report
from varcompress.compare.report import CSV_FIELDS, csv_text, deployed_latency, latency_axis, markdown, pareto_front
from varcompress.errors import VarcompressError


def row(**kw):
    r = {"method": "m", "spec": "runs/m", "kind": "pruned", "params_total": 10, "params_active_per_token": 5.0,
         "training": {"free": False, "stages": [{"name": "finetune", "groups": ["all"], "steps": 6}], "steps": 6,
                      "seeds": {"run": 0, "data": 0}, "summary": "finetune: all x6 (seeds run 0, data 0)"},
         "timing": [{"path": "eager", "batch": 2, "wall_s": 0.3, "cpu_s": 0.29, "wall_all": [0.3], "cpu_all": [0.29]},
                    {"path": "engine", "batch": 2, "wall_s": None, "cpu_s": None, "wall_all": None, "cpu_all": None}],
         "accuracy_std": 0.01, "fid_std": 0.5, "precision_std": None, "recall_std": None,
         "gflops": 0.4, "flops_fraction": 0.75, "flops_reduction": 0.25, "latency_s": 0.3, "throughput_img_s": 53.3,
         "engine_latency_s": 0.2, "engine_throughput_img_s": 80.0,
         "accuracy": 0.9, "fid": 12.0, "precision": 0.8, "recall": 0.7, "kl": 0.1, "top1": 0.8,
         "token_agreement": 0.5, "psnr_db": None, "grid": "grids/m.png", "details": {}}
    r.update(kw)
    return r


def report(rows=None):
    return {"format": "varcompress-compare", "schema_version": SCHEMA_VERSION, "varcompress_version": "0.1.0",
            "created": "2025-01-01T00:00:00+00:00", "dataset": "digits", "teacher": "digits",
            "protocol": {"n_per_class": 2, "seed": 0, "sampling": {"cfg": 1.5}, "teacher_maps": 4, "same_seed": 2},
            "quality_seeds": [0, 1],
            "latency": {"batches": [2], "rounds": 1, "warmup": 0, "threads": 1, "device": "cpu", "fresh_process": True},
            "rows": rows if rows is not None else [row(kind="teacher", grid=None), row()],
            "files": {"markdown": "table.md", "csv": "table.csv", "json": "report.json", "pareto": "pareto.png",
                      "pareto_latency": None, "grids": {"m": "grids/m.png"}}}


def test_schema_is_plain_json_and_covers_the_csv():
    json.dumps(REPORT_SCHEMA)
    props = set(ROW_SCHEMA["properties"])
    derived = {"trained", "train_steps", "train_seeds"}  # flattened from the row's `training`
    assert set(CSV_FIELDS) - derived <= props and set(ROW_SCHEMA["required"]) == props
    assert REPORT_SCHEMA["properties"]["rows"]["items"] is ROW_SCHEMA


def test_valid_report_passes():
    r = report()
    assert validate_report(r) is r
    validate_report(report(rows=[row(accuracy=None, fid=None, precision=None, recall=None, kind="activated")]))


@pytest.mark.parametrize("mutate,where", [
    (lambda r: r.pop("rows"), "missing key 'rows'"),
    (lambda r: r.update(extra=1), "unexpected key 'extra'"),
    (lambda r: r.update(format="other"), "report.format"),
    (lambda r: r.update(schema_version=99), "report.schema_version"),
    (lambda r: r["rows"][1].update(kind="magic"), "report.rows[1].kind"),
    (lambda r: r["rows"][1].update(params_total=1.5), "report.rows[1].params_total"),
    (lambda r: r["rows"][1].update(gflops=float("nan")), "report.rows[1].gflops"),
    (lambda r: r["rows"][1].update(gflops=-1.0), "report.rows[1].gflops"),
    (lambda r: r["rows"][1].update(fid="12"), "report.rows[1].fid"),
    (lambda r: r["rows"][0].pop("kl"), "report.rows[0]: missing key 'kl'"),
    (lambda r: r["latency"].update(rounds=0), "report.latency.rounds"),
    (lambda r: r["rows"][1]["timing"][0].update(path="jit"), "report.rows[1].timing[0].path"),
    (lambda r: r["rows"][1]["training"].pop("steps"), "report.rows[1].training: missing key 'steps'"),
    (lambda r: r["files"].pop("csv"), "report.files: missing key 'csv'"),
])
def test_invalid_reports_name_the_path(mutate, where):
    r = copy.deepcopy(report())
    mutate(r)
    with pytest.raises(VarcompressError) as e:
        validate_report(r)
    assert where in str(e.value) and "\n" not in str(e.value)


def test_renderers():
    r = report()
    md = markdown(r)
    assert md.count("\n| ") == 3 and "25.0%" in md and "0.900 ± 0.010" in md and "finetune: all x6" in md
    assert "| 0.300 / 0.290 | - / - |" in md  # eager wall / CPU; the engine refused
    text = csv_text(r["rows"], [2])
    head = text.splitlines()[0].split(",")
    assert head[:len(CSV_FIELDS)] == list(CSV_FIELDS) and head[len(CSV_FIELDS):] == \
        ["eager_b2_wall_s", "eager_b2_cpu_s", "engine_b2_wall_s", "engine_b2_cpu_s"]
    vals = next(iter(csv.reader(text.splitlines()[1:])))
    assert vals[head.index("psnr_db")] == "" and vals[head.index("engine_b2_wall_s")] == ""
    # (1, 5) dominates nothing with fewer FLOPs; (2, 9) is worse than (1, 5); (3, 1) is better
    assert pareto_front([(2, 9), (1, 5), (3, 1), (4, 2)], lower_is_better=True) == [1, 2]
    assert pareto_front([(1, 0.5), (2, 0.9), (3, 0.8)], lower_is_better=False) == [0, 1]


def test_latency_axis_places_each_row_at_its_deployed_path():
    engine = {"engine_latency_s": 1.0, "latency_s": 3.0}
    split = {"engine_latency_s": None, "latency_s": 2.5}  # the engine refuses a two-model split
    assert deployed_latency(engine) == (1.0, False) and deployed_latency(split) == (2.5, True)
    # one model without an engine no longer moves every row to the eager path
    assert latency_axis([engine, split]).startswith("engine, hollow: eager")
    assert latency_axis([engine, engine]) == "engine" and latency_axis([split]) == "eager path"
    assert latency_axis([engine, {"engine_latency_s": None, "latency_s": None}]) is None  # untimed: no plot
