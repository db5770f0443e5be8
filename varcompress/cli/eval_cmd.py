"""`varcompress eval`: testbed quality and teacher-relative metrics of one model."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..durable import atomic_write, check_output
from ..evaluate import evaluate_model
from .app import app


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
    for out in (json_out, grid):
        if out is not None:
            check_output(out, force)
    result = evaluate_model(model, vae, dataset, teacher, n_per_class, seed, grid, force, progress=True,
                            show=print_metrics, cfg=cfg, top_k=top_k, top_p=top_p)
    if json_out is not None:
        atomic_write(json_out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)), force=force)
