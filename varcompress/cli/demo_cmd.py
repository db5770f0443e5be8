"""`varcompress demo`: the main job on the embedded default, end to end, in minutes on a CPU."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import VarcompressError
from . import app


@app.command()
def demo(
    dataset: str = typer.Option("digits", help="Testbed data set: digits | shapes."),
    out: Path = typer.Option(Path("runs/demo"), help="Output folder."),
    n_per_class: int = typer.Option(20, help="Samples per class for the metrics."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output folder."),
):
    """Load the shipped teacher, print its testbed metrics and write a PNG grid per class."""
    import torch

    from ..checkpoint import atomic_write
    from ..evaluate import EvalProtocol, testbed_metrics
    from ..metrics.testbed_eval import reference_scores
    from ..testbed.teachers import load_teacher, teacher_card
    from ..viz import save_grid
    from .eval_cmd import print_metrics

    if out.exists() and any(out.iterdir()) and not force:
        raise VarcompressError(f"{out}: exists and is not empty (use --force to overwrite)")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    var, _ = load_teacher(dataset)
    card = teacher_card(dataset)
    proto = EvalProtocol(n_per_class=n_per_class, sampling=card["sampling"])
    typer.echo(f"[1/2] teacher: {dataset} VAR d{var.cfg.depth} C={var.C}, "
               f"{sum(p.numel() for p in var.parameters()):,} params; sampling {proto.sampling}")
    metrics, images = testbed_metrics(var, dataset, proto, progress=True)
    refs = reference_scores(dataset, len(images), seed=proto.seed)
    print_metrics("  teacher", {k: metrics[k] for k in ("accuracy", "fid", "precision", "recall")})
    typer.echo(f"  references at n={len(images)}: FID floor (real vs real) {refs['floor']['fid']:.3f}, "
               f"ceiling (class means + noise) {refs['ceiling']['fid']:.3f}")
    out.mkdir(parents=True, exist_ok=True)
    grid = save_grid(images, out / "teacher_samples.png", nrow=n_per_class, upscale=2, force=True)
    typer.echo(f"[2/2] samples (a row per class): {grid}")
    summary = {"dataset": dataset, "protocol": proto.to_dict(), "teacher": metrics, "references": refs}
    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    typer.echo(f"summary: {out / 'summary.json'}")
