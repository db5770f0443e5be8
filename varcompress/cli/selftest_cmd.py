"""`varcompress selftest`: every engine path on this machine against the eager reference (thin CLI)."""
from __future__ import annotations

import time

import torch
import typer

from ..selftest import TOLERANCE, format_row, resolve_device, selftest as run
from .app import app


@app.command()
def selftest(device: str = typer.Option("auto", help="auto | cpu | cuda: cuda adds the GPU paths "
                                                     "(bf16, grouped GEMM, CUDA graphs, torch.compile, DDP)."),
             threads: int = typer.Option(2, help="torch threads for the CPU paths.")):
    """Check every engine path available here against the eager float32 reference (about a minute on CPU).

    One row per path: passed, failed (with the difference) or skipped (with the reason).
    Exit code 1 when any path fails. GPU users: run this first.
    """
    device = resolve_device(device)
    torch.set_num_threads(max(1, threads))
    t0 = time.perf_counter()
    tol = ", ".join(f"{str(k).replace('torch.', '')} {v:g}" for k, v in TOLERANCE.items())
    typer.echo(f"greedy tokens equal (near ties allowed) and logits within tolerance x max(1, max |logit|): {tol}")
    rows = run(device, report=lambda r: typer.echo(format_row(r)))
    counts = {s: sum(r.status == s for r in rows) for s in ("passed", "failed", "skipped")}
    typer.echo(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
               f"in {time.perf_counter() - t0:.0f}s")
    if counts["failed"]:
        raise typer.Exit(1)
