"""`varcompress export`: any model -> a deployable directory (model.safetensors + config.json)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..export import export_model
from ..formats.export import read_export_config
from .app import app


@app.command()
def export(
    model: str = typer.Argument(..., help="Testbed name, VAR .pth/.safetensors, or a convert / prune / distill "
                                          "run / export directory."),
    out: Path = typer.Option(..., help="Output directory."),
    vae: Optional[Path] = typer.Option(None, help="The model's VQVAE checkpoint (recorded by fingerprint, so "
                                                  "loading with another VQVAE is refused)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output directory."),
):
    """Write model.safetensors + config.json that `varcompress.load(DIR, vae=...)` rebuilds exactly."""
    dest = export_model(model, out, vae=vae, force=force)
    cfg = read_export_config(dest)
    b = cfg["budget"]
    article = "an" if cfg["kind"] == "activated" else "a"
    typer.echo(f"exported {article} {cfg['kind']} model: {cfg['params']:,} parameters, "
               f"{b['transformer_gflops']:.3f} transformer GFLOPs/image ({b['fraction']:.1%} of dense)"
               + (", with its distill recipe" if cfg.get("recipe") else ""))
    typer.echo(f"wrote {dest}/model.safetensors and {dest}/config.json")
