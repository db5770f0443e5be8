"""Rendering a comparison: Markdown table, CSV, side-by-side PNG grids and a Pareto plot (Agg)."""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import torch

CSV_FIELDS = ("method", "kind", "spec", "params_total", "params_active_per_token", "gflops", "flops_fraction",
              "flops_reduction", "latency_s", "throughput_img_s", "engine_latency_s", "engine_throughput_img_s",
              "accuracy", "fid", "precision", "recall", "kl",
              "top1", "token_agreement", "psnr_db", "grid")
MD_COLUMNS = (  # header, key, format
    ("method", "method", "{}"), ("params total (M)", "params_total", "{:.3f}M"),
    ("active / token (M)", "params_active_per_token", "{:.3f}M"), ("GFLOPs/img (CFG)", "gflops", "{:.4f}"),
    ("FLOPs reduction", "flops_reduction", "{:.1%}"), ("latency (s/batch)", "latency_s", "{:.3f}"),
    ("img/s", "throughput_img_s", "{:.1f}"), ("engine latency (s/batch)", "engine_latency_s", "{:.3f}"),
    ("engine img/s", "engine_throughput_img_s", "{:.1f}"), ("accuracy", "accuracy", "{:.3f}"), ("FID", "fid", "{:.2f}"),
    ("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"), ("KL", "kl", "{:.4f}"),
    ("top-1", "top1", "{:.3f}"))


def slug(label: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._")
    return s or "model"


def _cell(row: dict, key: str, fmt: str) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    if key in ("params_total", "params_active_per_token"):
        v = v / 1e6
    return fmt.format(v)


def markdown(report: dict) -> str:
    lat, p = report["latency"], report["protocol"]
    lines = [f"# varcompress compare: {report['dataset'] or 'no testbed data set'} (teacher: {report['teacher']})", "",
             f"Quality: {p['n_per_class']} samples/class, seed {p['seed']}, sampling {p['sampling']}; KL / top-1 on "
             f"{p['teacher_maps']} teacher-drawn maps. Latency: eager path (`autoregressive_infer_cfg`) and "
             f"`varcompress.engine`, median of {lat['repeats']} round-robin runs, batch "
             f"{lat['batch']}, {lat['threads']} thread(s), {lat['device']}.", "",
             "| " + " | ".join(h for h, _, _ in MD_COLUMNS) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(MD_COLUMNS))) + "|"]
    for r in report["rows"]:
        lines.append("| " + " | ".join(_cell(r, k, f) for _, k, f in MD_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
    return buf.getvalue()


def grid_images(images: torch.Tensor, n_per_class: int, num_classes: int, per_class: int) -> torch.Tensor:
    """The first `per_class` images of every class from images grouped by class (n_per_class each)."""
    per_class = min(per_class, n_per_class)
    idx = [c * n_per_class + i for c in range(num_classes) for i in range(per_class)]
    return images[idx]


def side_by_side(teacher_imgs: torch.Tensor, imgs: torch.Tensor, nrow: int, titles: tuple[str, str] = ("teacher", ""),
                 upscale: int = 2) -> np.ndarray:
    """Two grids next to each other (teacher left), each under its title."""
    from PIL import Image, ImageDraw

    from ..viz import concat_grids_side_by_side, grid_array

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
    from PIL import Image

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


def pareto_plot(rows: list[dict], path: Path, title: str) -> bool:
    """Quality vs GFLOPs: FID, accuracy and KL when measured (else KL and top-1); False if nothing to plot.

    One colour per row (legend on the right), marker by kind, Pareto front dashed; FID and KL on a
    log axis when they span more than a decade (the teacher's KL of 0 is then left out).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    have = [(k, lo) for k, lo in PANELS if any(r.get(k) is not None for r in rows)]
    panels = [p for p in have if p[0] in ("fid", "accuracy", "kl")] if any(k == "fid" for k, _ in have) else have
    if not panels:
        return False
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
        pts = [(r["gflops"], r[key]) for r in rs]
        for r, (x, y) in zip(rs, pts):
            ax.scatter([x], [y], marker=markers.get(r["kind"], "o"), s=110 if r["kind"] == "teacher" else 40,
                       color=colour[r["method"]], edgecolors="k", linewidths=0.4, label=r["method"], zorder=3)
            if len(rows) <= 8:
                ax.annotate(r["method"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = pareto_front(pts, lower)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, alpha=0.6, zorder=2)
        ax.set_xlabel("transformer GFLOPs per image (CFG)")
        ax.set_ylabel(f"{key} ({'lower' if lower else 'higher'} is better)")
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(f"{title} (dashed: Pareto front)")
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / fig.get_figwidth(), 1))
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return True
