"""`varcompress demo`: the main job on the embedded default, end to end, in minutes on a CPU."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import VarcompressError
from . import app


@app.command()
def demo(
    dataset: str = typer.Option("digits", help="Testbed data set: digits | shapes."),
    out: Path = typer.Option(Path("runs/demo"), help="Output folder."),
    n_per_class: int = typer.Option(20, help="Samples per class for the metrics."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output folder."),
):
    """Teacher metrics and samples, then convert at 60% of its FLOPs and measure the activated model."""
    import torch

    from ..checkpoint import atomic_write
    from ..evaluate import EvalProtocol, testbed_metrics
    from ..metrics.testbed_eval import reference_scores
    from ..testbed.teachers import load_teacher, teacher_card
    from ..viz import save_grid
    from .eval_cmd import print_metrics

    if out.exists() and any(out.iterdir()) and not force:
        raise VarcompressError(f"{out}: exists and is not empty (use --force to overwrite)")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    var, _ = load_teacher(dataset)
    card = teacher_card(dataset)
    proto = EvalProtocol(n_per_class=n_per_class, sampling=card["sampling"])
    typer.echo(f"[1/3] teacher: {dataset} VAR d{var.cfg.depth} C={var.C}, "
               f"{sum(p.numel() for p in var.parameters()):,} params; sampling {proto.sampling}")
    metrics, images = testbed_metrics(var, dataset, proto, progress=True)
    refs = reference_scores(dataset, len(images), seed=proto.seed)
    print_metrics("  teacher", {k: metrics[k] for k in ("accuracy", "fid", "precision", "recall")})
    typer.echo(f"  references at n={len(images)}: FID floor (real vs real) {refs['floor']['fid']:.3f}, "
               f"ceiling (class means + noise) {refs['ceiling']['fid']:.3f}")
    out.mkdir(parents=True, exist_ok=True)
    grid = save_grid(images, out / "teacher_samples.png", nrow=n_per_class, upscale=2, force=True)
    typer.echo(f"  samples (a row per class): {grid}")
    activated = _convert_and_measure(var, dataset, proto, out, card)
    summary = {"dataset": dataset, "protocol": proto.to_dict(), "teacher": metrics, "references": refs,
               "activated": activated}
    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    typer.echo(f"summary: {out / 'summary.json'}")


def _convert_and_measure(var, dataset: str, proto, out: Path, card: dict) -> dict:
    """convert at a 60% FLOPs target (no distillation) and score it with the same protocol."""
    from ..convert import ConvertConfig, convert, save_activated
    from ..evaluate import testbed_metrics
    from ..viz import save_grid
    from .convert_cmd import print_budget_table
    from .eval_cmd import print_metrics

    s = card["sampling"]
    cfg = ConvertConfig(experts=8, flops_target=0.6, calib_samples=16, calib_cfg=s["cfg"],
                        calib_top_k=s["top_k"], calib_top_p=s["top_p"] or 1.0)
    typer.echo(f"[2/3] convert: {cfg.experts} experts per FFN, token selection, --flops-target {cfg.flops_target}")
    model = convert(var, cfg)
    save_activated(model, out / "activated", force=True, source={"testbed": dataset})
    print_budget_table(var, model)
    typer.echo("[3/3] activated model, before distillation (`varcompress distill recipes/testbed_digits.yaml` "
               "recovers the rest)")
    metrics, images = testbed_metrics(model, dataset, proto, progress=True)
    print_metrics("  activated", {k: metrics[k] for k in ("accuracy", "fid", "precision", "recall")})
    grid = save_grid(images, out / "activated_samples.png", nrow=proto.n_per_class, upscale=2, force=True)
    typer.echo(f"  samples: {grid}")
    return {**metrics, "budget": model.budget()}
