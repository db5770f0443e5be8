"""`varcompress inspect`: what a checkpoint is, its size and its cost."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import VarcompressError
from . import app


@app.command()
def inspect(
    ckpt: Optional[Path] = typer.Argument(None, help="A VAR or VQVAE checkpoint (.pth/.safetensors)."),
    arch: Optional[str] = typer.Option(None, help="Instead of a file: an official architecture, d16|d20|d24|d30 (built on the meta device)."),
):
    """Print the inferred configuration, parameter count and analytic GFLOPs per image."""
    from ..checkpoint import read_state_dict
    from ..flops import var_flops
    from ..models.var import VARConfig
    from ..var_io import build_var, infer_var_config

    if (ckpt is None) == (arch is None):
        raise VarcompressError("give exactly one of CKPT or --arch")
    if arch is not None:
        if arch not in ("d16", "d20", "d24", "d30"):
            raise VarcompressError(f"--arch {arch!r}: expected one of d16, d20, d24, d30")
        cfg, what = VARConfig.official(int(arch[1:])), f"official VAR-{arch} (meta device)"
    else:
        sd = read_state_dict(ckpt)
        if "quantize.embedding.weight" in sd:
            _inspect_vae(sd, ckpt)
            return
        cfg, what = infer_var_config(sd, str(ckpt)), str(ckpt)
    model = build_var(cfg, device="meta")
    n_params = sum(p.numel() for p in model.parameters())
    fl = var_flops(cfg)
    typer.echo(f"{what}: VAR transformer")
    for k, v in cfg.to_dict().items():
        if k != "extra":
            typer.echo(f"  {k:<14} {v}")
    typer.echo(f"  {'tokens L':<14} {model.L}")
    typer.echo(f"  {'parameters':<14} {n_params:,}")
    typer.echo(f"  {'GFLOPs/image':<14} {fl.transformer:.2f} (transformer, with CFG)")
    for comp, g in fl.by_component.items():
        if g:
            typer.echo(f"    {comp:<12} {g:10.3f}  ({100 * g / fl.transformer:4.1f}%)")


def _inspect_vae(sd, path) -> None:
    from ..vae_io import infer_vae_config

    cfg = infer_vae_config(sd)
    n_params = sum(v.numel() for k, v in sd.items() if "ema_vocab_hit" not in k)
    typer.echo(f"{path}: VQVAE tokenizer")
    for k, v in cfg.to_dict().items():
        typer.echo(f"  {k:<16} {v}")
    typer.echo(f"  {'parameters':<16} {n_params:,}")
