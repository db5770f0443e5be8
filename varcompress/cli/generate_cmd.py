"""`varcompress generate`: class-conditional samples as PNGs (to look at) or as an FID `.npz` (to score)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from ..durable import check_output
from ..errors import VarcompressError
from . import app

DEFAULT_SAMPLING = {"cfg": 1.5, "top_k": 900, "top_p": 0.96}  # the official ImageNet settings


def parse_classes(spec: str | None, num_classes: int) -> list[int]:
    """'0,3,5-9' -> [0, 3, 5, 6, 7, 8, 9] (sorted, no repeats); None -> every class."""
    if spec is None:
        return list(range(num_classes))
    chosen = set()
    for part in spec.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise VarcompressError(f"--classes: expected classes and ranges like 0,3,5-9, got {spec!r}") from None
        if not 0 <= a <= b < num_classes:
            raise VarcompressError(f"--classes: {part.strip()!r} is not a class or range within 0-{num_classes - 1}")
        chosen.update(range(a, b + 1))
    return sorted(chosen)


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
        import torch

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
    from ..distill.dist import init_dist, shutdown

    n = n_per_class if n_per_class is not None else (50 if npz is not None else 8)
    _check(out, npz, per_image, n, batch, seed, cfg, top_k, top_p, device, force)
    d = init_dist(device)
    try:
        _generate(d, model, vae, dataset, classes, n, dict(cfg=cfg, top_k=top_k, top_p=top_p), seed, batch,
                  out, per_image, npz, force)
    except BaseException:
        shutdown(d, clean=False)
        raise
    shutdown(d)


def _generate(d, model, vae, dataset, classes, n, given, seed, batch, out, per_image, npz, force) -> None:
    from .. import __version__
    from ..generate import SEEDING, fid_npz, generate_images, write_samples_dir
    from ..resolve import resolve_model
    from ..testbed.teachers import teacher_card

    m = resolve_model(model, vae, dataset)
    if m.var.vae is None:
        raise VarcompressError(f"{model}: generation needs the model's VQVAE (pass --vae)")
    cls = parse_classes(classes, m.var.num_classes)
    card = {**DEFAULT_SAMPLING, **((teacher_card(m.dataset).get("sampling") if m.dataset else None) or {})}
    sampling = {k: type(DEFAULT_SAMPLING[k])(card[k] if v is None else v) for k, v in given.items()}
    var = m.var.to(d.device)
    var.vae.to(d.device)
    if npz is not None:
        fid_npz(var, cls, n, npz, d, force=force, progress=True, seed=seed, batch=batch, **sampling)
        if d.is_main:
            typer.echo(f"wrote {npz}: {len(cls) * n} images ({len(cls)} classes x {n})")
        return
    images = generate_images(var, cls, n, seed=seed, batch=batch, progress=True, **sampling)
    manifest = {"format": "varcompress-samples", "varcompress_version": __version__, "model": m.label,
                "kind": m.kind, "dataset": m.dataset, "classes": cls, "n_per_class": n, "seed": seed,
                "batch": batch, "sampling": sampling, "seeding": SEEDING, "device": str(d.device),
                "image_size": list(images.shape[1:3]), "grid": "grid.png",
                "images": "class{class:04d}/{index:05d}.png" if per_image else None}
    write_samples_dir(images, cls, n, out, manifest, per_image=per_image, force=force)
    typer.echo(f"wrote {out}: {len(images)} images of {images.shape[1]}x{images.shape[2]} "
               f"({len(cls)} classes x {n})")
