"""`compare`'s latency: every model, path (eager, engine) and batch timed in its own fresh process.

`python -m varcompress.compare.timing JOB` is the worker: it loads one model the way
`compare` does, runs `warmup` untimed generations, times one (wall clock and process CPU
time, `engine.bench.time_one`) and prints the record. `time_models` schedules the
workers (`engine.fresh.run_rounds`: alternating order, repeated rounds, fixed threads).
"""
from __future__ import annotations


import torch

from ..engine import Engine
from ..engine.bench import time_one
from ..engine.bench_models import Variant
from ..engine.fresh import run_rounds, summarize, worker_main
from ..errors import VarcompressError
from ..streams import derive_seed
from .models import Entry, load_model

PATHS = ("eager", "engine")


def jobs_for(specs: list[tuple[str, str]], where: dict, batches: list[int], warmup: int, sampling: dict,
             device: str) -> list[dict]:
    """One job per (model, path, batch); `specs` = (label, spec), `where` = dataset / vae."""
    return [{"label": f"{label} [{path}, B={b}]", "row": i, "spec": spec, "path": path, "batch": b,
             "warmup": warmup, "sampling": sampling, "device": device, **where}
            for i, (label, spec) in enumerate(specs) for b in batches for path in PATHS]


def time_models(specs: list[tuple[str, str]], where: dict, batches: list[int], rounds: int, warmup: int,
                threads: int, sampling: dict, device: str = "cpu", log=None) -> list[list[dict]]:
    """Per model: [{path, batch, wall_s, cpu_s, wall_all, cpu_all} or with wall_s None where refused]."""
    jobs = jobs_for(specs, where, batches, warmup, sampling, device)
    recs = run_rounds("varcompress.compare.timing", jobs, rounds, threads, log)
    out: list[list[dict]] = [[] for _ in specs]
    for job, rs in zip(jobs, recs):
        s = summarize(rs) or {"wall_s": None, "cpu_s": None, "wall_all": None, "cpu_all": None}
        out[job["row"]].append({"path": job["path"], "batch": job["batch"], **s})
    return out


def _job_runner(var, path: str, sampling: dict, seed: int):
    if path == "eager":
        return lambda B, labels: var.autoregressive_infer_cfg(B, labels, g_seed=seed, **sampling)
    eng = Engine(var)
    return lambda B, labels: eng.generate(B, labels, g_seed=seed, **sampling)


@torch.no_grad()
def worker(job: dict) -> dict:
    """Load the model, warm up, time one generation of `batch` images."""
    m = load_model(Entry("timed", job["spec"]), dataset=job.get("dataset"), vae_path=job.get("vae"))
    dev = torch.device(job["device"])
    m.var.to(dev).eval()
    m.var.vae.to(dev)
    try:
        run = _job_runner(m.var, job["path"], job["sampling"], derive_seed(0, "latency"))
    except VarcompressError as e:
        return {"refused": str(e)}
    B = job["batch"]
    labels = (torch.arange(B, device=dev) * 7 + 3) % m.var.num_classes
    v = Variant(model=job["spec"], name=job["path"], run=run, transformer_gflops=0.0, decode_gflops=0.0,
                malloc_tuned=job["path"] == "engine")
    for _ in range(job["warmup"]):
        time_one(v, B, labels, dev)
    return time_one(v, B, labels, dev)


if __name__ == "__main__":
    worker_main(worker)
