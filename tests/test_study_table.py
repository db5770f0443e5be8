"""benchmarks/study_table.py: budgets' compare reports -> one table with speedups and the noise flag."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _row(method, frac, walls, fid, fid_std, engine=True, free=False):
    timing = [{"path": p, "batch": b, "wall_s": (w if p == "engine" and engine else (w * 2 if p == "eager" else None)),
               "cpu_s": w} for b, w in walls.items() for p in ("eager", "engine")]
    return {"method": method, "flops_fraction": frac, "flops_reduction": 1 - frac, "timing": timing,
            "accuracy": 0.9, "accuracy_std": 0.01, "fid": fid, "fid_std": fid_std, "kl": 0.1, "top1": 0.8,
            "training": {"free": True} if free else {"summary": "all x200; seeds run 0, data 0"}}


def test_one_table_from_two_budgets(tmp_path):
    for name, frac, fid in (("a", 0.75, 30.0), ("b", 0.6, 40.0)):
        rows = [_row("teacher", 1.0, {1: 1.0, 16: 4.0}, 29.0, 1.0),
                _row(f"act-{name}", frac, {1: 0.5, 16: 2.0}, fid, 1.0),
                _row("split", frac, {1: 0.8, 16: 3.2}, 29.5, 0.5, engine=False, free=True)]
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps({"rows": rows, "latency": {"batches": [1, 16]}}))
    out = tmp_path / "t" / "study.md"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "study_table.py"), str(tmp_path / "a"),
                    str(tmp_path / "b"), "--out", str(out)], check=True, cwd=ROOT, capture_output=True)
    lines = out.read_text().splitlines()
    assert len(lines) == 2 + 1 + 2 + 2  # header, the teacher once, two rows per budget
    assert "0.500 (2.00x)" in lines[3] and "2.000 (2.00x)" in lines[3]
    assert "30.0 ± 1.0" in lines[3] and "*" not in lines[3].split("|")[-4]  # 1.0 from the teacher: within 2 std
    assert "40.0 ± 1.0 *" in lines[5]  # 11 from the teacher: beyond the noise
    assert "1.600 (0.62x) eager" in lines[4] and "training-free" in lines[4]  # no engine: its eager path against the teacher's engine, marked
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert len(rows) == 6 and rows[1]["speedup_b16"] == 2.0


def test_missing_report_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "study_table.py"), str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no compare report" in r.stderr
