"""`varcompress testbed ...`: train and describe the embedded teachers."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import app

testbed_app = typer.Typer(no_args_is_help=True, help="The embedded testbed: data sets and teachers.")
app.add_typer(testbed_app, name="testbed")


@testbed_app.command("train")
def train(
    name: str = typer.Argument(..., help="Data set: shapes | digits."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: the package's shipped assets)."),
    seed: int = typer.Option(0, help="Random seed."),
    vae_steps: Optional[int] = typer.Option(None, help="Override the tokenizer's training steps."),
    var_steps: Optional[int] = typer.Option(None, help="Override the VAR's training steps."),
    threads: int = typer.Option(1, help="torch threads (1 is fastest on a shared 2-core machine)."),
):
    """Train the tokenizer and the VAR teacher for a data set (resumes if interrupted)."""
    import dataclasses

    import torch

    from ..testbed.datasets import dataset_info
    from ..testbed.teachers import teacher_spec
    from ..testbed.train import train_teacher

    dataset_info(name)
    torch.set_num_threads(threads)
    spec = teacher_spec(name)
    if vae_steps is not None:
        spec = dataclasses.replace(spec, vae_steps=vae_steps)
    if var_steps is not None:
        spec = dataclasses.replace(spec, var_steps=var_steps)
    paths = train_teacher(name, out_dir=out, seed=seed, spec=spec)
    for k, p in paths.items():
        typer.echo(f"{k:>5}: {p}")


@testbed_app.command("info")
def info():
    """List the built-in data sets and whether a trained teacher is shipped for each."""
    from ..testbed.datasets import DATASETS, dataset_info
    from ..testbed.teachers import teacher_card, teacher_paths

    for name in DATASETS:
        d = dataset_info(name)
        has = teacher_paths(name)["var"].exists()
        card = teacher_card(name)
        typer.echo(f"{name}: {d['num_classes']} classes, {d['image_size']}x{d['image_size']}, "
                   f"patch_nums {tuple(d['patch_nums'])}; teacher {'shipped' if has else 'missing'}"
                   + (f", sampling {card.get('sampling')}" if card else ""))
