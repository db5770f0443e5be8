"""`varcompress distill RECIPE`: two-stage distillation from a YAML recipe (CPU, GPU or torchrun DDP)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..distill import distill
from .app import app


@app.command("distill")
def distill_cmd(
    recipe: Path = typer.Argument(..., help="Recipe YAML (see recipes/ and docs/DISTILL.md)."),
    force: bool = typer.Option(False, "--force", help="Start over: delete this run's previous outputs."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Continue from the newest checkpoint in the output folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (overrides run.out_dir)."),
):
    """Distill an activated student from its dense teacher; multi-process with
    `torchrun --nproc_per_node=N -m varcompress.cli distill RECIPE`."""
    res = distill(recipe, force=force, resume=resume, out_dir=out)
    if res.result is None:  # not rank 0
        return
    typer.echo(f"distilled student: {res.out_dir / 'student'}")
    for name, m in res.result["models"].items():
        line = [f"{name:>9}: FLOPs x{m['flops']['fraction']:.3f}"]
        tr = m.get("teacher_relative")
        if tr:
            line.append(f"KL {tr['kl']:.4f}  top-1 {tr['top1_agreement']:.3f}")
        tb = m.get("testbed")
        if tb:
            line += [f"{k} {v:.4f}" for k, v in tb.items() if k in ("accuracy", "fid")]
        typer.echo("  ".join(line))
