"""report.json schema: a JSON Schema dict, and the built-in validator accepts good reports and names bad paths."""
from __future__ import annotations

import copy
import json

import pytest

from varcompress.compare import REPORT_SCHEMA, ROW_SCHEMA, SCHEMA_VERSION, validate_report
from varcompress.compare.report import CSV_FIELDS, csv_text, markdown, pareto_front
from varcompress.errors import VarcompressError


def row(**kw):
    r = {"method": "m", "spec": "runs/m", "kind": "pruned", "params_total": 10, "params_active_per_token": 5.0,
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
            "latency": {"batch": 2, "repeats": 1, "warmup": 0, "threads": 1, "device": "cpu"},
            "rows": rows if rows is not None else [row(kind="teacher", grid=None), row()],
            "files": {"markdown": "table.md", "csv": "table.csv", "json": "report.json", "pareto": "pareto.png",
                      "grids": {"m": "grids/m.png"}}}


def test_schema_is_plain_json_and_covers_the_csv():
    json.dumps(REPORT_SCHEMA)
    props = set(ROW_SCHEMA["properties"])
    assert set(CSV_FIELDS) <= props and set(ROW_SCHEMA["required"]) == props
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
    (lambda r: r["latency"].update(batch=0), "report.latency.batch"),
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
    assert md.count("\n| ") == 3 and "25.0%" in md
    text = csv_text(r["rows"])
    assert text.splitlines()[0] == ",".join(CSV_FIELDS) and text.splitlines()[1].split(",")[-2] == ""  # psnr None
    # (1, 5) dominates nothing with fewer FLOPs; (2, 9) is worse than (1, 5); (3, 1) is better
    assert pareto_front([(2, 9), (1, 5), (3, 1), (4, 2)], lower_is_better=True) == [1, 2]
    assert pareto_front([(1, 0.5), (2, 0.9), (3, 0.8)], lower_is_better=False) == [0, 1]
