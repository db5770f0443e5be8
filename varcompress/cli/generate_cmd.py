"""`varcompress generate`: class-conditional samples as PNGs (to look at) or as an FID `.npz` (to score)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
import typer

from ..dist import dist_session
from ..durable import check_output
from ..errors import VarcompressError
from ..generate.files import sample_model
from .app import app


def _check(out, npz, per_image, n, batch, seed, cfg, top_k, top_p, device, force) -> None:
    """Every refusal that needs no model, before anything is loaded or drawn."""
    if out is None and npz is None:
        raise VarcompressError("nothing to write: give --out DIR (PNG grid) or --npz PATH (FID samples)")
    if out is not None and npz is not None:
        raise VarcompressError("give --out or --npz, not both")
    if out is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise VarcompressError("--out is written by one process; under torchrun use --npz")
    if per_image and out is None:
        raise VarcompressError("--per-image needs --out")
    if npz is not None and npz.suffix != ".npz":
        raise VarcompressError(f"--npz: {npz} does not end in .npz")
    for ok, msg in ((n >= 1, f"--n-per-class must be >= 1, got {n}"),
                    (batch >= 1, f"--batch must be >= 1, got {batch}"),
                    (seed >= 0, f"--seed must be >= 0, got {seed}"),
                    (cfg is None or cfg >= 0, f"--cfg must be >= 0, got {cfg}"),
                    (top_k is None or top_k >= 0, f"--top-k must be >= 0 (0: off), got {top_k}"),
                    (top_p is None or 0 <= top_p < 1, f"--top-p must be in [0, 1) (0: off), got {top_p}")):
        if not ok:
            raise VarcompressError(msg)
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise VarcompressError(f"--device: expected auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise VarcompressError(f"--device {device}: CUDA is not available")
    for path in (out, npz):
        if path is not None:
            check_output(path, force)


@app.command("generate")
def generate(
    model: str = typer.Argument(..., help="Testbed name (shapes|digits), model directory or VAR .pth."),
    vae: Optional[Path] = typer.Option(None, help="VQVAE checkpoint (not needed for testbed models)."),
    dataset: Optional[str] = typer.Option(None, help="Testbed data set of the model (its VQVAE, sampling defaults)."),
    classes: Optional[str] = typer.Option(None, help="Classes to draw, e.g. 0,3,5-9 (default: all)."),
    n_per_class: Optional[int] = typer.Option(None, "--n-per-class", "-n",
                                              help="Images per class (default 8; 50 with --npz)."),
    cfg: Optional[float] = typer.Option(None, help="CFG scale (default: the testbed card's, else 1.5)."),
    top_k: Optional[int] = typer.Option(None, help="Top-k, 0: off (default: the testbed card's, else 900)."),
    top_p: Optional[float] = typer.Option(None, help="Top-p, 0: off (default: the testbed card's, else 0.96)."),
    seed: int = typer.Option(0, help="Base seed; see docs/GENERATE.md for the per-class rule."),
    batch: int = typer.Option(50, help="Images per forward pass; part of the seeding rule, like --seed."),
    out: Optional[Path] = typer.Option(None, help="Output folder: grid.png (a row per class) and samples.json."),
    per_image: bool = typer.Option(False, "--per-image", help="Also write out/class{c:04d}/{i:05d}.png."),
    npz: Optional[Path] = typer.Option(None, help="FID mode: write arr_0 (uint8 N,H,W,3), arr_1 (labels) here."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    device: str = typer.Option("auto", help="auto, cpu or cuda (under torchrun: cuda:LOCAL_RANK)."),
):
    """Draw class-conditional samples. FID over N GPUs:
    `torchrun --nproc_per_node=N -m varcompress.cli generate MODEL --vae VAE --npz samples.npz`."""
    n = n_per_class if n_per_class is not None else (50 if npz is not None else 8)
    _check(out, npz, per_image, n, batch, seed, cfg, top_k, top_p, device, force)
    with dist_session(device) as d:
        r = sample_model(model, vae, dataset, classes, n, seed, batch, out, per_image, npz, force, progress=True,
                         d=d, cfg=cfg, top_k=top_k, top_p=top_p)
        if npz is None:
            h, w = r["image_size"]
            typer.echo(f"wrote {out}: {r['n_images']} images of {h}x{w} ({len(r['classes'])} classes x {n})")
        elif d.is_main:
            typer.echo(f"wrote {npz}: {r['n_images']} images ({len(r['classes'])} classes x {n})")
