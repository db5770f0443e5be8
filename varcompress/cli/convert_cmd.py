"""`varcompress convert`: a dense VAR checkpoint -> an activated model directory."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..convert.api import convert_checkpoint
from ..errors import VarcompressError
from ..flops import var_flops
from .app import app


def parse_keep_ratio(text: str | None) -> float | list[float] | None:
    """'0.5' (the last scales) or '1,1,1,1,0.7,0.5,0.5' (one ratio per scale)."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise VarcompressError(f"--keep-ratio {text!r}: expected a number or a comma-separated list") from None
    return values[0] if len(values) == 1 else values


@app.command()
def convert(
    ckpt: Optional[str] = typer.Argument(None, help="Dense VAR checkpoint (.pth/.safetensors) or a testbed "
                                                    "name; default: the embedded digits teacher."),
    out: Optional[Path] = typer.Option(None, help="Output directory (model.safetensors + config.json); "
                                                  "default: NAME-activated in the current directory."),
    vae: Optional[Path] = typer.Option(None, help="VQVAE checkpoint (draws calibration samples)."),
    experts: int = typer.Option(8, help="Experts per FFN (must divide the FFN width)."),
    top_k: Optional[int] = typer.Option(None, help="Routed experts per token (default: all)."),
    keep_ratio: Optional[str] = typer.Option(None, help="Token keep ratio of the last scales, or one per scale."),
    flops_target: Optional[float] = typer.Option(None, help="Fraction of dense transformer FLOPs to keep; "
                                                            "allocates top-k and keep ratios."),
    allocation: str = typer.Option("sensitivity", help="Budget allocation: sensitivity | uniform."),
    calib_samples: int = typer.Option(32, help="Teacher-drawn calibration images."),
    seed: int = typer.Option(0),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output directory."),
    progress: bool = typer.Option(True, "--progress/--no-progress",
                                  help="Progress bars with ETA for every phase (shown only on a terminal)."),
):
    """Split FFNs into experts with routers, add token selectors, calibrate, and save."""
    kw = dict(experts=experts, top_k=top_k, flops_target=flops_target, allocation=allocation,
              calib_samples=calib_samples, seed=seed)
    keep = parse_keep_ratio(keep_ratio)
    if keep is not None:
        kw["keep_ratio"] = keep
    dense, model, out = convert_checkpoint(ckpt, out, vae, force=force, progress=progress, log=typer.echo, **kw)
    print_budget_table(dense, model)
    typer.echo(f"wrote {out}/model.safetensors and {out}/config.json")


def print_budget_table(dense, model) -> None:
    """Dense vs activated: parameters and GFLOPs per image (with CFG), per component."""
    d, a = var_flops(dense.cfg), model.flops()
    n_dense = sum(p.numel() for p in dense.parameters())
    n_act = sum(p.numel() for p in model.parameters())
    typer.echo(f"{'':<12}{'dense':>12}{'activated':>12}{'ratio':>8}")
    typer.echo(f"{'params':<12}{n_dense:>12,}{n_act:>12,}{n_act / n_dense:>8.3f}")
    for comp, g in d.by_component.items():
        ga = a.by_component[comp]
        if g or ga:
            typer.echo(f"{comp + ' GF':<12}{g:>12.3f}{ga:>12.3f}{(ga / g if g else float('inf')):>8.3f}")
    typer.echo(f"{'total GF':<12}{d.transformer:>12.3f}{a.transformer:>12.3f}{a.transformer / d.transformer:>8.3f}")
    b = model.budget()
    typer.echo(f"top-k per block {b['top_k']}, kept tokens per scale {b['keep_counts']}")
