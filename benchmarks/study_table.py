"""The study's one table: every budget's `compare` report condensed into rows a reader can scan.

    python benchmarks/study_table.py runs/study_scenes_75/compare runs/study_scenes_60/compare \
        --out docs/results/study_scenes/study.md

Per row: how it was trained, FLOPs, engine wall-clock at each batch and its speedup over the
teacher's engine (both timed in fresh processes by `compare`), accuracy / FID as mean ± std
over sampling seeds, KL / top-1 to the teacher. A row's FID is marked `*` when it is further
from the teacher's than the noise: the larger of the two seed stds times 2 (the spread the
seeds show for one model, for two independent means). Writes the Markdown and a JSON twin.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from varcompress.compare.report import trained_text
from varcompress.durable import atomic_write


def engine_wall(row: dict, batch: int) -> float | None:
    """The engine's median wall seconds per batch, else the eager path's (a two-model split)."""
    by = {(t["path"], t["batch"]): t["wall_s"] for t in row.get("timing") or []}
    return by.get(("engine", batch)) or by.get(("eager", batch))


def condensed(report: dict) -> list[dict]:
    rows, batches = report["rows"], report["latency"]["batches"]
    teacher = rows[0]
    out = []
    for r in rows:
        c = {"method": r["method"],
             "trained": trained_text(r), "flops_fraction": r["flops_fraction"],
             "accuracy": r.get("accuracy"), "accuracy_std": r.get("accuracy_std"),
             "fid": r.get("fid"), "fid_std": r.get("fid_std"), "kl": r.get("kl"), "top1": r.get("top1"),
             "engine": not any(t["path"] == "engine" and t["wall_s"] is None for t in r.get("timing") or [])}
        for b in batches:
            w, w0 = engine_wall(r, b), engine_wall(teacher, b)
            c[f"wall_b{b}_s"] = w
            c[f"speedup_b{b}"] = None if not w or not w0 else w0 / w
        if r.get("fid") is not None and teacher.get("fid") is not None:
            noise = 2 * max(r.get("fid_std") or 0.0, teacher.get("fid_std") or 0.0)
            c["fid_beyond_noise"] = abs(r["fid"] - teacher["fid"]) > noise
        out.append(c)
    return out


def _pm(mean, std, fmt: str) -> str:
    if mean is None:
        return "-"
    return fmt.format(mean) + ("" if std is None or math.isnan(std) else " ± " + fmt.format(std))


def markdown(reports: list[tuple[str, dict]], rows_by_report: list[list[dict]]) -> str:
    batches = reports[0][1]["latency"]["batches"]
    head = ["budget", "method", "trained", "FLOPs"] + [f"engine s/batch B={b} (speedup)" for b in batches] + \
        ["accuracy", "FID", "KL", "top-1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for (_, rep), rows in zip(reports, rows_by_report):
        for i, c in enumerate(rows):
            if i == 0 and rep is not reports[0][1]:
                continue  # the teacher once
            lat = [("-" if c[f"wall_b{b}_s"] is None else f"{c[f'wall_b{b}_s']:.3f}"
                    + ("" if c[f"speedup_b{b}"] is None else f" ({c[f'speedup_b{b}']:.2f}x)")
                    + ("" if c["engine"] else " eager")) for b in batches]
            fid = _pm(c["fid"], c["fid_std"], "{:.1f}") + (" *" if c.get("fid_beyond_noise") else "")
            lines.append("| " + " | ".join([
                "teacher" if i == 0 else f"{c['flops_fraction']:.2f}", c["method"], c["trained"],
                f"{c['flops_fraction']:.3f}", *lat, _pm(c["accuracy"], c["accuracy_std"], "{:.3f}"), fid,
                "-" if c["kl"] is None else f"{c['kl']:.3f}", "-" if c["top1"] is None else f"{c['top1']:.3f}"]) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reports", nargs="+", type=Path, help="compare output directories (or their report.json)")
    p.add_argument("--out", type=Path, help="Markdown path (a .json twin is written beside it)")
    a = p.parse_args()
    reports = []
    for d in a.reports:
        f = d / "report.json" if d.is_dir() else d
        if not f.is_file():
            print(f"error: {f}: no compare report there", file=sys.stderr)
            return 2
        reports.append((str(f), json.loads(f.read_text())))
    rows = [condensed(rep) for _, rep in reports]
    md = markdown(reports, rows)
    print(md, end="")
    if a.out:
        doc = json.dumps({"reports": [f for f, _ in reports], "rows": [r for rs in rows for r in rs]}, indent=1)
        atomic_write(a.out, lambda tmp: Path(tmp).write_text(md))
        atomic_write(a.out.with_suffix(".json"), lambda tmp: Path(tmp).write_text(doc + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
