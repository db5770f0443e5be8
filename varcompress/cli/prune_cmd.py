"""`varcompress prune`: training-free baselines at a FLOPs target (optionally fine-tuned with a recipe's budget)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..durable import check_output
from ..errors import VarcompressError
from ..prune.config import ALIASES
from . import app

METHOD_HELP = ("magnitude | wanda (FFN neurons) | residual-tokens (training-free token pruning; old name: tokens) "
               "| both (wanda + residual tokens) | fastvar (FastVAR-style cached token pruning) | fastvar-wanda "
               "| split (CoDe-style: teacher on the early scales, a smaller pruned copy on the late ones).")


def _match_fraction(spec: str, teacher, vae, dataset) -> tuple[float, dict]:
    """FLOPs fraction (of `teacher`) of the model to match, and its token-reconstruction settings."""
    from ..compare.models import load_model, parse_spec
    from ..flops import var_flops
    from ..prune.api import model_gflops

    m = load_model(parse_spec(spec), vae=vae, dataset=dataset)
    if m.var.cfg.embed_dim != teacher.cfg.embed_dim or tuple(m.var.patch_nums) != tuple(teacher.patch_nums):
        raise VarcompressError(f"--match {spec}: not a model of the teacher's shape")
    cc = m.info.get("convert_config") or {}
    return model_gflops(m.var) / var_flops(teacher.cfg).transformer, cc


@app.command("prune")
def prune_cmd(
    ckpt: str = typer.Argument(..., help="Dense VAR: testbed name (digits|shapes) or official-format .pth."),
    method: str = typer.Option(..., "--method", help=METHOD_HELP),
    out: Path = typer.Option(..., "--out", help="Output model directory."),
    flops_target: Optional[float] = typer.Option(None, "--flops-target",
                                                 help="Fraction of the teacher's transformer FLOPs, e.g. 0.75."),
    match: Optional[str] = typer.Option(None, "--match",
                                        help="Match this model's FLOPs (activated dir, distill run dir, pruned dir)."),
    vae: Optional[Path] = typer.Option(None, help="VQVAE .pth (not needed for testbed teachers)."),
    dataset: Optional[str] = typer.Option(None, help="Testbed data set of a .pth teacher (for its VQVAE / sampling)."),
    neuron_score: str = typer.Option("wanda", help="Neuron score for --method both: magnitude | wanda."),
    compensate: Optional[bool] = typer.Option(None, "--compensate/--no-compensate",
                                              help="Fold removed neurons' mean output into fc2.bias (default: wanda)."),
    sparse_scales: Optional[int] = typer.Option(None, help="Token pruning on the last N scales (default 3, or "
                                                           "the matched model's)."),
    reconstruction: Optional[str] = typer.Option(None, help="identity | prev_scale | cached (default prev_scale, "
                                                            "fastvar: cached; or the matched model's)."),
    cache_scale: Optional[int] = typer.Option(None, help="fastvar: scale whose block update fills skipped tokens "
                                                         "(default: the last dense scale)."),
    split_scale: Optional[int] = typer.Option(None, help="split: number of scales the teacher draws (default: all "
                                                         "but the last 2)."),
    small_depth: Optional[int] = typer.Option(None, help="split: blocks of the small model (default: half)."),
    token_share: float = typer.Option(0.5, help="--method both: share of the FLOPs saving taken by tokens."),
    calib_samples: int = typer.Option(64, help="Teacher-drawn token maps for Wanda scores / calibration."),
    finetune: Optional[Path] = typer.Option(None, "--finetune", help="Distill recipe whose budget (steps, lr, "
                                                                     "batch, data) fine-tunes the baseline."),
    seed: int = typer.Option(0),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out."),
):
    """Build a training-free baseline at a FLOPs target: FFN neurons, tokens (residual, FastVAR), a scale split."""
    import torch

    from ..compare.models import Entry, load_model, teacher_sha256
    from ..prune import PruneConfig, budget_from_recipe, finetune as run_finetune, prune, save_pruned, teacher_data
    from ..testbed.teachers import teacher_card

    if threads is not None:
        torch.set_num_threads(max(1, threads))
    check_output(out, force)
    if method in ALIASES:
        typer.echo(f"note: --method {method} is deprecated; it is {ALIASES[method]} (training-free token pruning)",
                   err=True)
        method = ALIASES[method]
    if (flops_target is None) == (match is None):
        raise VarcompressError("give exactly one of --flops-target R and --match MODEL")

    def config(target: float, cc: dict) -> PruneConfig:
        own = method in ("fastvar", "fastvar-wanda") or not cc.get("sparse_scales")  # else: the matched model's
        return PruneConfig(method=method, flops_target=target, neuron_score=neuron_score, compensate=compensate,
                           sparse_scales=sparse_scales or (None if own else cc["sparse_scales"]),
                           reconstruction=reconstruction or (None if own else cc.get("reconstruction")),
                           upsample=None if own else cc.get("upsample"), cache_scale=cache_scale,
                           split_scale=split_scale, small_depth=small_depth, token_share=token_share,
                           calib_samples=calib_samples, seed=seed)

    config(1.0 if flops_target is None else flops_target, {})  # bad flags fail before anything loads
    budget = budget_from_recipe(finetune) if finetune is not None else None
    t = load_model(Entry("teacher", ckpt), dataset=dataset, vae_path=vae)
    if t.kind not in ("teacher", "dense"):
        raise VarcompressError(f"{ckpt}: prune needs a dense VAR, got a {t.kind} model")
    cc = {}
    if match is not None:
        flops_target, cc = _match_fraction(match, t.var, t.var.vae, t.dataset)
        typer.echo(f"matching {match}: {flops_target:.4f} of the teacher's transformer FLOPs", err=True)
    cfg = config(float(flops_target), cc)
    sampling = (teacher_card(t.dataset).get("sampling") if t.dataset else None) or None
    sha = teacher_sha256(ckpt)
    res = prune(t.var, cfg, sampling=sampling)
    i = res.info
    typer.echo(f"{method}: FFN width {i['hidden']}/{i['teacher_hidden']}, keep counts {i['keep_counts']}, "
               f"{i['gflops']:.4f} GFLOPs = {i['fraction']:.4f} of the teacher (target {i['target_fraction']:.4f})")
    summary = None
    if budget is not None:
        from ..distill.recipe import load_recipe

        r_teacher = load_recipe(finetune)["teacher"]["checkpoint"]
        if teacher_sha256(r_teacher) != sha:
            raise VarcompressError(f"--finetune {finetune}: its teacher ({r_teacher}) is not {ckpt}")
        data = teacher_data(t.var, sha, budget, sampling or dict(cfg=1.5, top_k=900, top_p=0.96), progress=True)
        summary = run_finetune(res.model, t.var, data, budget, progress=True)
        typer.echo(f"fine-tuned {', '.join(summary['trained'])} for {summary['steps']} steps: KL "
                   f"{summary['first_loss']:.4f} -> {summary['last_loss']:.4f}")
    source = {"spec": ckpt, "sha256": sha, "testbed": t.dataset, "match": match}
    dest = save_pruned(res.model, i, out, source=source, finetune=summary, force=force)
    typer.echo(f"wrote {dest}")
