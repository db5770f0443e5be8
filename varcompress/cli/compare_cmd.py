"""`varcompress compare`: a side-by-side table, grids and a Pareto plot of several models."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import torch
import typer

from ..compare import CompareOptions, compare, load_compare_recipe, parse_spec
from ..compare.report import markdown
from ..durable import check_output
from ..errors import VarcompressError
from .app import app


@app.command("compare")
def compare_cmd(
    models: List[str] = typer.Argument(None, help="Model specs (label=spec allowed): testbed name, pruned / activated "
                                                  "/ distill-run directory, VAR .pth."),
    out: Path = typer.Option(..., "--out",
                             help="Output directory (table.md, table.csv, report.json, grids/, pareto.png)."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="Compare recipe YAML (models, dataset, protocol)."),
    dataset: Optional[str] = typer.Option(None, help="Testbed data set (testbed metrics; its teacher by default)."),
    teacher: Optional[str] = typer.Option(None, help="Teacher (testbed name or VAR .pth; default: the dataset's)."),
    vae: Optional[Path] = typer.Option(None, help="VQVAE .pth (not needed on the testbed)."),
    n_per_class: Optional[int] = typer.Option(None, help="Samples per class for testbed metrics (default 50)."),
    batch: Optional[List[int]] = typer.Option(None, "--batch",
                                              help="Latency batch size; repeatable (default 1 and 16)."),
    rounds: Optional[int] = typer.Option(None, "--rounds", "--repeats",
                                         help="Fresh-process latency rounds, alternating order (default 3)."),
    seed: Optional[int] = typer.Option(None, help="Base seed of the evaluation maps and the real reference."),
    seeds: Optional[List[int]] = typer.Option(None, "--sample-seed", help="Sampling seed of the testbed metrics; "
                                                                           "repeatable (default 0 1 2)."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (also of every timing process; default 1)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out."),
):
    """Compare models against their teacher: params, GFLOPs, latency, throughput, quality; Markdown/CSV/JSON + PNGs."""
    if threads is not None:
        if threads < 1:
            raise VarcompressError("--threads must be >= 1")
        torch.set_num_threads(threads)
    check_output(out, force)
    entries, where, opts = [], {"dataset": None, "teacher": None, "vae": None}, CompareOptions()
    if recipe is not None:
        entries, where, opts = load_compare_recipe(recipe)
    entries = entries + [parse_spec(m) for m in (models or [])]
    if not entries:
        raise VarcompressError("compare: give model specs or --recipe")
    for k, v in (("n_per_class", n_per_class), ("batches", list(batch or []) or None), ("rounds", rounds),
                 ("seed", seed), ("seeds", list(seeds or []) or None),
                 ("threads", threads)):
        if v is not None:
            setattr(opts, k, v)
    ds = dataset or where["dataset"]
    rep = compare(entries, out, dataset=ds, teacher=teacher or where["teacher"], vae_path=vae or where["vae"],
                  opts=opts, force=force, log=lambda m: typer.echo(m, err=True))
    typer.echo(markdown(rep))
    typer.echo(f"wrote {out}")
