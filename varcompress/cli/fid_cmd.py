"""`varcompress fid`: ImageNet FID / Inception Score of a samples .npz, from local files only."""
from __future__ import annotations

from pathlib import Path

import typer

from ..metrics.imagenet_fid import imagenet_fid
from .app import app


@app.command()
def fid(
    samples: Path = typer.Argument(..., help="Samples .npz (arr_0: uint8 N,H,W,3), e.g. from the FID sampling mode."),
    ref: Path = typer.Option(..., help="Reference .npz with mu/sigma (e.g. VIRTUAL_imagenet256_labeled.npz)."),
    inception_weights: Path = typer.Option(..., help="Local InceptionV3 FID weights (pt_inception-2015-12-05)."),
    device: str = typer.Option("cpu"),
):
    """Compute FID and Inception Score with torch-fidelity's InceptionV3; nothing is downloaded."""
    r = imagenet_fid(samples, ref, inception_weights, device=device)
    typer.echo(f"FID {r['fid']:.3f}  IS {r['inception_score']:.2f} +- {r['inception_score_std']:.2f}  (n={r['n']})")
