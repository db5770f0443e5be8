"""`varcompress eval`: testbed quality and teacher-relative metrics of one model."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..durable import check_output
from ..errors import VarcompressError
from . import app


def print_metrics(title: str, metrics: dict) -> None:
    typer.echo(title)
    for k, v in metrics.items():
        if isinstance(v, float):
            typer.echo(f"  {k:<22} {v:.4f}")
        elif isinstance(v, list):
            typer.echo(f"  {k:<22} " + " ".join(f"{x:.3f}" for x in v))
        else:
            typer.echo(f"  {k:<22} {v}")


@app.command("eval")
def eval_(
    model: str = typer.Argument(..., help="Testbed name (shapes|digits), model directory or VAR .pth."),
    vae: Optional[Path] = typer.Option(None, help="VQVAE checkpoint (not needed for testbed models)."),
    dataset: Optional[str] = typer.Option(None, help="Testbed data set the model generates (for testbed metrics)."),
    teacher: Optional[str] = typer.Option(None, help="Teacher to compare against (testbed name or VAR .pth)."),
    n_per_class: int = typer.Option(50, help="Samples per class for testbed metrics."),
    seed: int = typer.Option(0),
    cfg: Optional[float] = typer.Option(None, help="CFG scale (default: the teacher card's)."),
    top_k: Optional[int] = typer.Option(None),
    top_p: Optional[float] = typer.Option(None),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics here (JSON)."),
    grid: Optional[Path] = typer.Option(None, help="Write a PNG grid of the samples (a row per class)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
):
    """Print testbed metrics (class accuracy, FID, precision/recall) and teacher-relative metrics."""
    from ..checkpoint import atomic_write
    from ..evaluate import EvalProtocol, teacher_metrics, testbed_metrics
    from ..resolve import resolve_model
    from ..testbed.teachers import teacher_card
    from ..viz import save_grid

    for out in (json_out, grid):
        if out is not None:
            check_output(out, force)
    if n_per_class < 2:
        raise VarcompressError("--n-per-class must be >= 2")
    m = resolve_model(model, vae, dataset)
    sampling = dict((teacher_card(m.dataset).get("sampling") if m.dataset else None) or
                    dict(cfg=1.5, top_k=900, top_p=0.96))
    for k, v in (("cfg", cfg), ("top_k", top_k), ("top_p", top_p)):
        if v is not None:
            sampling[k] = v
    proto = EvalProtocol(n_per_class=n_per_class, seed=seed, sampling=sampling)
    result = {"model": m.label, "kind": m.kind, "dataset": m.dataset, "protocol": proto.to_dict()}
    if m.dataset is not None:
        result["testbed"], images = testbed_metrics(m.var, m.dataset, proto, progress=True)
        print_metrics(f"{m.label} on {m.dataset} ({proto.n_per_class}/class, sampling {sampling})", result["testbed"])
        if grid is not None:
            save_grid(images, grid, nrow=n_per_class if n_per_class <= 16 else 16, upscale=2, force=force)
    if teacher is not None:
        t = resolve_model(teacher, vae, m.dataset)
        result["teacher_relative"] = teacher_metrics(m.var, t.var, proto)
        print_metrics(f"against {t.label}", result["teacher_relative"])
    if m.dataset is None and teacher is None:
        raise VarcompressError("nothing to measure: give --dataset (testbed metrics) or --teacher")
    if json_out is not None:
        atomic_write(json_out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)), force=force)
