"""`varcompress prune`: training-free baselines at a FLOPs target (optionally fine-tuned with a recipe's budget)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer

from ..prune.api import prune_checkpoint
from .app import app

METHOD_HELP = ("magnitude | wanda (FFN neurons) | residual-tokens (training-free token pruning; old name: tokens) "
               "| both (wanda + residual tokens) | fastvar (FastVAR-style cached token pruning) | fastvar-wanda "
               "| split (CoDe-style: teacher on the early scales, a smaller pruned copy on the late ones).")


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
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    res = prune_checkpoint(ckpt, method, out, flops_target=flops_target, match=match, vae=vae, dataset=dataset,
                           finetune=finetune, force=force, progress=True, log=typer.echo, neuron_score=neuron_score,
                           compensate=compensate, sparse_scales=sparse_scales, reconstruction=reconstruction,
                           cache_scale=cache_scale, split_scale=split_scale, small_depth=small_depth,
                           token_share=token_share, calib_samples=calib_samples, seed=seed)
    typer.echo(f"wrote {res['path']}")
