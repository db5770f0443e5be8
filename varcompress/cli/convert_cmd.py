"""`varcompress convert`: a dense VAR checkpoint -> an activated model directory."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..durable import check_output
from ..errors import VarcompressError
from . import app


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
    from ..checkpoint import sha256_file
    from ..convert import ConvertConfig, save_activated
    from ..convert import convert as run_convert
    from ..resolve import resolve_model
    from ..testbed.teachers import teacher_card, teacher_paths

    spec = ckpt or "digits"
    out = out or Path(f"{Path(spec).stem if Path(spec).suffix else Path(spec).name}-activated")
    check_output(out, force)
    m = resolve_model(spec, vae)
    if m.kind != "dense":
        raise VarcompressError(f"{spec}: {'an' if m.kind == 'activated' else 'a'} {m.kind} model; convert takes a "
                               "dense VAR checkpoint")
    if m.vae is None:
        raise VarcompressError(f"{spec}: pass --vae so the teacher can draw calibration samples")
    kw = dict(experts=experts, top_k=top_k, flops_target=flops_target, allocation=allocation,
              calib_samples=calib_samples, seed=seed)
    keep = parse_keep_ratio(keep_ratio)
    if keep is not None:
        kw["keep_ratio"] = keep
    if m.dataset is not None:  # calibrate with the testbed teacher's own sampling settings
        s = teacher_card(m.dataset).get("sampling", {})
        kw.update(calib_cfg=s.get("cfg", 1.5), calib_top_k=s.get("top_k", 0), calib_top_p=s.get("top_p", 0.0) or 1.0)
    cfg = ConvertConfig(**kw)
    typer.echo(f"converting {m.label}: {cfg.experts} experts, calibrating on {cfg.calib_samples} teacher samples")
    model = run_convert(m.var, cfg, progress=progress)
    source_file = teacher_paths(m.dataset)["var"] if m.dataset and not Path(spec).exists() else Path(spec)
    if source_file.is_dir():  # an exported dense model
        source_file = source_file / "model.safetensors"
    save_activated(model, out, source_sha256=sha256_file(source_file), force=force,
                   source={"checkpoint": str(source_file), "testbed": m.dataset})
    print_budget_table(m.var, model)
    typer.echo(f"wrote {out}/model.safetensors and {out}/config.json")


def print_budget_table(dense, model) -> None:
    """Dense vs activated: parameters and GFLOPs per image (with CFG), per component."""
    from ..flops import var_flops

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
