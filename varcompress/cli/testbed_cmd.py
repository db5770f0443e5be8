"""`varcompress testbed ...`: train and describe the embedded teachers."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import torch
import typer

from ..durable import atomic_dir, check_output
from ..errors import VarcompressError
from ..testbed.datasets import DATASETS, dataset_info
from ..testbed.report import teacher_report, write_report
from ..testbed.teachers import teacher_card, teacher_paths, teacher_spec, var_stages
from ..testbed.train import train_teacher
from .app import app

testbed_app = typer.Typer(no_args_is_help=True, help="The embedded testbed: data sets and teachers.")
app.add_typer(testbed_app, name="testbed")


@testbed_app.command("train")
def train(
    name: str = typer.Argument(..., help="Data set: scenes | shapes | digits."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: the package's shipped assets)."),
    seed: int = typer.Option(0, help="Random seed."),
    vae_steps: Optional[int] = typer.Option(None, help="Override the tokenizer's training steps."),
    var_steps: Optional[int] = typer.Option(None, help="Override the VAR's training steps."),
    threads: int = typer.Option(1, help="torch threads (1 is fastest on a shared 2-core machine)."),
    tokenizer: Optional[Path] = typer.Option(None, help="Train only the VAR, on this trained VQVAE (e.g. the "
                                             "shipped NAME_vae.pth) instead of training a tokenizer."),
    var_init: Optional[Path] = typer.Option(None, help="Continue from this trained VAR (fresh optimizer, a new "
                                            "warmup-cosine schedule of --var-steps): a longer schedule."),
    var_lr: float = typer.Option(2e-3, help="The VAR's peak learning rate."),
):
    """Train the tokenizer and the VAR teacher for a data set (resumes if interrupted)."""
    dataset_info(name)
    torch.set_num_threads(threads)
    spec = teacher_spec(name)
    if vae_steps is not None:
        spec = dataclasses.replace(spec, vae_steps=vae_steps)
    if var_steps is not None:
        spec = dataclasses.replace(spec, var_steps=var_steps)
    paths = train_teacher(name, out_dir=out, seed=seed, spec=spec, tokenizer=tokenizer, var_init=var_init,
                          var_lr=var_lr)
    for k, p in paths.items():
        typer.echo(f"{k:>5}: {p}")


@testbed_app.command("info")
def info(name: Optional[str] = typer.Argument(None, help="One data set (default: all of them).")):
    """Describe the built-in data sets, their teachers (shipped or not) and the teachers' cards."""
    for n in [name] if name is not None else list(DATASETS):
        d = dataset_info(n)
        has = teacher_paths(n)["var"].exists()
        card = teacher_card(n)
        typer.echo(f"{n}: {d['num_classes']} classes, {d['image_size']}x{d['image_size']}, "
                   f"patch_nums {tuple(d['patch_nums'])}; teacher {'shipped' if has else 'missing'}"
                   + (f", sampling {card.get('sampling')}" if card else ""))
        if name is not None:
            typer.echo(f"  {d['description']}")
            typer.echo(f"  classes: {', '.join(d['class_names'])}")
            if card:
                var, stages = card["var"], var_stages(card)
                steps = " + ".join(str(n) for n, _ in stages)
                seconds = " + ".join(_seconds(t) for _, t in stages)
                typer.echo(f"  VAR: depth {var['depth']}, width {var['embed_dim']}, {var['num_heads']} heads, "
                           f"vocab {var['vocab_size']}; trained {steps} steps x {card['var_batch']} "
                           f"({seconds} s); tokenizer {card['vae_steps']} steps "
                           f"({_seconds(card['train_seconds']['vae'])} s)")
                for key in ("metrics", "sampling_note"):
                    if key in card:
                        typer.echo(f"  {key}: {card[key]}")


def _seconds(t: int | None) -> str:
    return "?" if t is None else str(t)  # None: not recorded (e.g. a tokenizer given, not trained)


@testbed_app.command("report")
def report(
    name: str = typer.Argument(..., help="Data set whose shipped teacher to validate."),
    out: Path = typer.Option(..., help="Output folder: report.json, report.md, samples.png, scale_ablation.png."),
    n_per_class: int = typer.Option(50, help="Samples per class (the FID sample count is 10x this)."),
    seeds: int = typer.Option(3, help="Sampling seeds (>= 2: the spread of FID and accuracy)."),
    n_real: int = typer.Option(2000, help="Real test images for the tokenizer and classifier checks."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output folder."),
):
    """Validate a testbed teacher: tokenizer, classifier strictness, seed noise, last-scale ablation."""
    check_output(out, force)
    if n_per_class < 2 or seeds < 2 or n_real < 2:
        raise VarcompressError("--n-per-class, --seeds and --n-real must be >= 2")
    result, pictures = teacher_report(name, n_per_class=n_per_class, seeds=tuple(range(seeds)), n_real=n_real)
    with atomic_dir(out, force=force) as tmp:
        write_report(result, pictures, tmp)
    typer.echo((out / "report.md").read_text())
