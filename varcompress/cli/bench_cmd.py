"""`varcompress bench`: generation speed of the eager path, the engine and activated models.

By default every (model, variant, batch) runs in its own fresh process (alternating order over
`--repeats` rounds, fixed `--threads`, default 1): in one process earlier variants shape the heap
of later ones. `--same-process` keeps the old interleaved measurement (needed for `--decode`)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import torch
import typer

from ..engine.bench import markdown, run_benchmark
from ..engine.bench_fresh import run_fresh_benchmark
from ..engine.bench_models import BUDGETS, MODELS
from ..errors import VarcompressError
from .app import app


@app.command("bench")
def bench(
    models: List[str] = typer.Option(["small"], "--model", help="d16 (random full size), shapes, digits, small; repeatable."),
    batch: List[int] = typer.Option([1], "--batch", help="Batch sizes; repeatable."),
    repeats: int = typer.Option(3, help="Timed repeats (fresh: rounds of one process per variant) per variant; "
                                        "median reported."),
    warmup: int = typer.Option(0, help="Untimed runs per variant before timing."),
    budget: List[str] = typer.Option([], "--budget", help="Activated budgets: k4, k4-keep0.7, k2-keep0.5; repeatable."),
    student: List[str] = typer.Option([], "--student", help="Your model of the testbed --model teacher (activated, "
                                                            "pruned, distill run or export dir); repeatable."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: 1 with fresh processes, else "
                                                     "torch's)."),
    fresh: bool = typer.Option(True, "--fresh/--same-process", help="Each timed run in a new process (default) "
                                                                    "or all variants interleaved in this one."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="Also bf16 engine variants and the eager call "
                                                                       "under bf16 autocast (default: if native)."),
    calib: int = typer.Option(2, help="Random calibration samples for converting random-weight models."),
    act_eager: bool = typer.Option(True, "--act-eager/--no-act-eager", help="Also time activated models' own eager path."),
    decode: bool = typer.Option(False, "--decode/--no-decode", help="Also time the decoder alone (layouts, dtypes)."),
    compile_: bool = typer.Option(False, "--compile", help="Also engine variants with torch.compile."),
    cuda_graphs: bool = typer.Option(False, "--cuda-graphs", help="Also engine variants with CUDA graphs (GPU)."),
    out: Path = typer.Option(Path("benchmarks/results"), help="Output folder for JSON and Markdown."),
    stem: str = typer.Option("bench", help="Output file name stem."),
):
    """Time generation (latency, images/s, peak memory, GFLOPs/image, breakdown) and write a report."""
    if repeats < 1 or warmup < 0 or any(b < 1 for b in batch):
        raise VarcompressError("--repeats must be >= 1, --warmup >= 0 and every --batch >= 1")
    for name in models:  # a typo is an error; only a missing testbed teacher is skipped (with the reason)
        if name not in MODELS:
            raise VarcompressError(f"--model {name!r}: unknown model ({', '.join(MODELS)})")
    for b in budget:
        if b not in BUDGETS:
            raise VarcompressError(f"--budget {b!r}: unknown budget ({', '.join(BUDGETS)})")
    if fresh and (decode or threads is not None and threads < 1):
        raise VarcompressError("--decode needs --same-process; --threads must be >= 1")
    if cuda_graphs and not device.startswith("cuda"):
        raise VarcompressError("--cuda-graphs needs --device cuda")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise VarcompressError("--device cuda: CUDA is not available")
    extras = tuple(n for n, on in (("compile", compile_), ("graphs", cuda_graphs)) if on)
    log = lambda m: typer.echo(m, err=True)  # noqa: E731
    if fresh:
        res = run_fresh_benchmark(list(models), list(batch), repeats, warmup, list(budget), device, threads or 1,
                                  bf16, calib, act_eager, out, stem, extras=extras, log=log, students=list(student))
    else:
        res = run_benchmark(list(models), list(batch), repeats, warmup, list(budget), device, threads, bf16, calib,
                            act_eager, decode, out, stem, extras=extras, log=log, students=list(student))
    typer.echo(markdown(res["rows"], res["meta"]))
