"""Rendering a comparison: Markdown table, CSV, side-by-side PNG grids and a Pareto plot (Agg)."""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..viz import concat_grids_side_by_side, grid_array

CSV_FIELDS = ("method", "kind", "spec", "trained", "train_steps", "train_seeds", "params_total",
              "params_active_per_token", "gflops", "flops_fraction", "flops_reduction", "latency_s", "throughput_img_s",
              "engine_latency_s", "engine_throughput_img_s", "accuracy", "accuracy_std", "fid", "fid_std",
              "precision", "precision_std", "recall", "recall_std", "kl", "top1", "token_agreement", "psnr_db", "grid")
SPREAD = ("accuracy", "fid", "precision", "recall")
MD_HEAD = (  # header, key, format
    ("method", "method", "{}"), ("trained (groups x steps; seeds)", "trained", "{}"),
    ("params total (M)", "params_total", "{:.3f}M"), ("active / token (M)", "params_active_per_token", "{:.3f}M"),
    ("GFLOPs/img (CFG)", "gflops", "{:.4f}"), ("FLOPs reduction", "flops_reduction", "{:.1%}"))
MD_TAIL = (("accuracy", "accuracy", "{:.3f}"), ("FID", "fid", "{:.2f}"), ("precision", "precision", "{:.3f}"),
           ("recall", "recall", "{:.3f}"), ("KL", "kl", "{:.4f}"), ("top-1", "top1", "{:.3f}"))


def slug(label: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._")
    return s or "model"


def trained_text(row: dict) -> str:
    t = row.get("training") or {}
    return "training-free" if t.get("free") is True else t.get("summary") or "-"


def flat(row: dict, batches: list[int]) -> dict:
    """The row's table values: training columns and per-(path, batch) wall / CPU medians."""
    t = row.get("training") or {}
    out = {**row, "trained": trained_text(row), "train_steps": t.get("steps"),
           "train_seeds": None if not t.get("seeds") else f"run {t['seeds']['run']}, data {t['seeds']['data']}"}
    for x in row.get("timing") or []:
        for k in ("wall_s", "cpu_s"):
            out[f"{x['path']}_b{x['batch']}_{k}"] = x[k]
    return out


def timing_fields(batches: list[int]) -> list[str]:
    return [f"{p}_b{b}_{k}" for b in batches for p in ("eager", "engine") for k in ("wall_s", "cpu_s")]


def _cell(row: dict, key: str, fmt: str) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    if key in ("params_total", "params_active_per_token"):
        v = v / 1e6
    text = fmt.format(v)
    if key in SPREAD and row.get(f"{key}_std") is not None:
        text += " ± " + fmt.format(row[f"{key}_std"])
    return text


def markdown(report: dict) -> str:
    lat, p = report["latency"], report["protocol"]
    batches = lat["batches"]
    cols = list(MD_HEAD) + [(f"{path} s/batch B={b} (wall / CPU)", (f"{path}_b{b}_wall_s", f"{path}_b{b}_cpu_s"),
                             "{:.3f}") for b in batches for path in ("eager", "engine")] + list(MD_TAIL)
    seeds = report.get("quality_seeds") or [p["seed"]]
    lines = [f"# varcompress compare: {report['dataset'] or 'no testbed data set'} (teacher: {report['teacher']})", "",
             f"Quality: {p['n_per_class']} samples/class, sampling seeds {seeds} (mean ± std over seeds), sampling "
             f"{p['sampling']}; KL / top-1 on {p['teacher_maps']} teacher-drawn maps (streams disjoint from training). "
             f"Latency: eager path (`autoregressive_infer_cfg`) and `varcompress.engine`, every model, path and batch "
             f"in its own fresh process, median of {lat['rounds']} alternating rounds (warm-up {lat['warmup']}), "
             f"{lat['threads']} thread(s), {lat['device']}.", "",
             "| " + " | ".join(h for h, _, _ in cols) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(cols))) + "|"]
    for r in report["rows"]:
        f = flat(r, batches)
        cells = []
        for _, k, fmt in cols:
            if isinstance(k, tuple):
                cells.append(" / ".join(_cell(f, x, fmt) for x in k))
            else:
                cells.append(_cell(f, k, fmt))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict], batches: list[int]) -> str:
    fields = list(CSV_FIELDS) + timing_fields(batches)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        f = flat(r, batches)
        w.writerow({k: ("" if f.get(k) is None else f.get(k)) for k in fields})
    return buf.getvalue()


def grid_images(images: torch.Tensor, n_per_class: int, num_classes: int, per_class: int) -> torch.Tensor:
    """The first `per_class` images of every class from images grouped by class (n_per_class each)."""
    per_class = min(per_class, n_per_class)
    idx = [c * n_per_class + i for c in range(num_classes) for i in range(per_class)]
    return images[idx]


def side_by_side(teacher_imgs: torch.Tensor, imgs: torch.Tensor, nrow: int, titles: tuple[str, str] = ("teacher", ""),
                 upscale: int = 2) -> np.ndarray:
    """Two grids next to each other (teacher left), each under its title."""
    gap = 12
    grids = [grid_array(teacher_imgs, nrow, upscale=upscale), grid_array(imgs, nrow, upscale=upscale)]
    body = concat_grids_side_by_side(grids, gap=gap)
    head = Image.new("RGB", (body.shape[1], 14), (255, 255, 255))
    draw, x = ImageDraw.Draw(head), 0
    for g, title in zip(grids, titles):
        width = g.shape[1] + gap
        draw.text((x + 2, 1), title[: max(1, width // 6)], fill=(0, 0, 0))
        x += width
    return np.concatenate([np.asarray(head), body], axis=0)


def save_png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr).save(path, format="PNG")


def pareto_front(points: list[tuple[float, float]], lower_is_better: bool) -> list[int]:
    """Indices of the non-dominated points (fewer FLOPs and better quality), by increasing FLOPs."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1] if lower_is_better else -points[i][1]))
    front, best = [], None
    for i in order:
        q = points[i][1]
        if best is None or (q < best if lower_is_better else q > best):
            front.append(i)
            best = q
    return front


PANELS = (("fid", True), ("accuracy", False), ("kl", True), ("top1", False))


def deployed_latency(row: dict) -> tuple[float | None, bool]:
    """A row's fastest deployable path at the largest batch: the engine's seconds, else (a model the
    engine refuses, e.g. the two-model scale split) the eager path's; and whether it fell back."""
    if row.get("engine_latency_s") is not None:
        return row["engine_latency_s"], False
    return row.get("latency_s"), row.get("latency_s") is not None


def latency_axis(rows: list[dict]) -> str | None:
    """The latency axis' label, None if some row was not timed. Rows are placed at their deployed
    latency: plotting every row at the eager path because one model has no engine would hide what
    the engine does for the others."""
    timed = [deployed_latency(r) for r in rows]
    if any(t is None for t, _ in timed):
        return None
    fallback = [fb for _, fb in timed]
    if all(fallback):
        return "eager path"
    return "engine" + (", hollow: eager" if any(fallback) else "")


def pareto_plot(rows: list[dict], path: Path, name: str, axis: str = "gflops") -> bool:
    """Quality vs GFLOPs (axis "gflops") or vs measured seconds per batch (axis "latency"): FID, accuracy
    and KL when measured (else KL and top-1), seed spread as error bars; False if nothing to plot.

    One colour per row (legend on the right), marker by kind, Pareto front dashed; FID and KL on a
    log axis when they span more than a decade (the teacher's KL of 0 is then left out).
    """
    import matplotlib  # lazy on purpose: the optional `plot` extra, half a second to import
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    have = [(k, lo) for k, lo in PANELS if any(r.get(k) is not None for r in rows)]
    panels = [p for p in have if p[0] in ("fid", "accuracy", "kl")] if any(k == "fid" for k, _ in have) else have
    lat = latency_axis(rows) if axis == "latency" else None
    if not panels or (axis == "latency" and lat is None):
        return False
    x_of = (lambda r: r["gflops"]) if axis == "gflops" else (lambda r: deployed_latency(r)[0])
    hollow = (lambda r: False) if axis == "gflops" or lat == "eager path" else (lambda r: deployed_latency(r)[1])
    xlabel = "transformer GFLOPs per image (CFG)" if axis == "gflops" else \
        f"s/batch, fresh processes ({lat})"
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 2.6, 4.4), squeeze=False)
    markers = {"teacher": "*", "dense": "s", "activated": "o", "pruned": "^"}
    cmap = plt.get_cmap("tab20")
    colour = {r["method"]: cmap(i % 20) for i, r in enumerate(rows)}
    for ax, (key, lower) in zip(axes[0], panels):
        rs = [r for r in rows if r.get(key) is not None]
        vals = [r[key] for r in rs]
        pos = [v for v in vals if v > 0]
        log = lower and bool(pos) and max(pos) > 10 * min(pos)
        if log:
            rs = [r for r in rs if r[key] > 0]
            ax.set_yscale("log")
        pts = [(x_of(r), r[key]) for r in rs]
        for r, (x, y) in zip(rs, pts):
            ax.errorbar([x], [y], yerr=[r.get(f"{key}_std") or 0.0], fmt="none", ecolor=colour[r["method"]],
                        capsize=3, lw=1, zorder=2)
            ax.scatter([x], [y], marker=markers.get(r["kind"], "o"), s=110 if r["kind"] == "teacher" else 40,
                       color="none" if hollow(r) else colour[r["method"]],
                       edgecolors=colour[r["method"]] if hollow(r) else "k", linewidths=1.2 if hollow(r) else 0.4,
                       label=r["method"], zorder=3)
            if len(rows) <= 8:
                ax.annotate(r["method"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = pareto_front(pts, lower)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, alpha=0.6, zorder=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{key} ({'lower' if lower else 'higher'} is better)")
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    what = "transformer FLOPs" if axis == "gflops" else "measured latency"
    fig.suptitle(f"{name}: quality vs {what} (bars: std over sampling seeds; dashed: Pareto front)")
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / fig.get_figwidth(), 1))
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return True
