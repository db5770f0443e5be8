"""`varcompress demo`: the main job on the embedded default, end to end, in minutes on a CPU."""
from __future__ import annotations

from pathlib import Path

import typer

from ..pipeline import PipelineConfig, run_pipeline
from .app import app


@app.command()
def demo(
    dataset: str = typer.Option("digits", help="Testbed data set: digits | shapes."),
    out: Path = typer.Option(Path("runs/demo"), help="Output folder."),
    flops_target: float = typer.Option(0.6, help="Fraction of the teacher's transformer FLOPs to keep."),
    align_steps: int = typer.Option(40, help="Distillation stage 1 steps (routers and selectors)."),
    joint_steps: int = typer.Option(80, help="Distillation stage 2 steps (end to end); baselines get the same."),
    n_per_class: int = typer.Option(20, help="Samples per class in the comparison."),
    threads: int = typer.Option(1, help="torch CPU threads (1 is fastest on a shared 2-core machine)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output folder."),
):
    """convert -> distill -> Wanda / residual-token / FastVAR baselines (equal FLOPs, budget) -> compare -> export."""
    cfg = PipelineConfig(dataset=dataset, flops_target=flops_target, align_steps=align_steps,
                         joint_steps=joint_steps, n_per_class=n_per_class, threads=max(1, threads))
    summary = run_pipeline(cfg, out, log=typer.echo, force=force)
    table = Path(summary["paths"]["table"])
    typer.echo("")
    typer.echo(table.read_text())
    typer.echo(f"pictures: {table.parent / 'pareto.png'} (quality vs FLOPs), {table.parent / 'grids'}/ "
               "(each model beside the teacher, same classes and seeds)")
    typer.echo(f"deployable student: {summary['paths']['export']} (varcompress.load(DIR, vae=...))")
