"""`varcompress inspect`: what a checkpoint is, its size and its cost."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..var_io import describe_checkpoint
from .app import app


@app.command()
def inspect(
    ckpt: Optional[Path] = typer.Argument(None, help="A VAR or VQVAE checkpoint (.pth/.safetensors)."),
    arch: Optional[str] = typer.Option(None, help="Instead of a file: an official architecture, d16|d20|d24|d30 (built on the meta device)."),
):
    """Print the inferred configuration, parameter count and analytic GFLOPs per image."""
    d = describe_checkpoint(ckpt, arch)
    if d["kind"] == "vqvae":
        typer.echo(f"{d['what']}: VQVAE tokenizer")
        for k, v in d["config"].to_dict().items():
            typer.echo(f"  {k:<16} {v}")
        typer.echo(f"  {'parameters':<16} {d['params']:,}")
        return
    fl = d["flops"]
    typer.echo(f"{d['what']}: VAR transformer")
    for k, v in d["config"].to_dict().items():
        typer.echo(f"  {k:<14} {v}")
    typer.echo(f"  {'tokens L':<14} {d['tokens']}")
    typer.echo(f"  {'parameters':<14} {d['params']:,}")
    typer.echo(f"  {'GFLOPs/image':<14} {fl.transformer:.2f} (transformer, with CFG)")
    for comp, g in fl.by_component.items():
        if g:
            typer.echo(f"    {comp:<12} {g:10.3f}  ({100 * g / fl.transformer:4.1f}%)")
