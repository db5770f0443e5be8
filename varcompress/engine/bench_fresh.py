"""`varcompress bench` with every (model, variant, batch) timed in its own fresh process.

Why: the same-process benchmark (`bench.measure`) lets earlier variants shape the heap of
later ones; ratios against the eager reference moved with it. Here a worker process
builds one model (random weights are seeded, so every process builds the same one), one
variant, warms up and times a single generation; `engine.fresh.run_rounds` alternates the
order over repeated rounds, and rows / speedups (`bench._row`, `bench.add_speedups`: per
round paired ratios) are computed exactly as before.
`python -m varcompress.engine.bench_fresh JOB` is the worker ("op": "list" | "time").
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..errors import VarcompressError
from .bench import _row, add_speedups, run_meta, time_one, write_results
from .bench_models import Variant, build_model, load_students, variants_for
from .cpu import cpu_supports_bf16
from .fresh import run_once, run_rounds, worker_main


def _variants(job: dict, only: str | None, built=None):
    dev = torch.device(job["device"])
    var, vae = built or build_model(job["model"], dev)
    students = load_students(job["model"], var, job["students"], dev)
    vs = variants_for(job["model"], var, vae, dev, job["budgets"], job["bf16"], job["calib"], job["act_eager"],
                      extras=tuple(job["extras"]), log=lambda m: print(m, file=sys.stderr), students=students,
                      only=only)
    return vs, dev


def worker(job: dict):
    if job["op"] == "list":
        try:
            built = build_model(job["model"], torch.device(job["device"]))
        except Exception as e:  # noqa: BLE001 - a missing teacher skips that model, as in `bench.run_benchmark`
            return {"skip": str(e)}
        vs, _ = _variants(job, None, built)
        return [{"name": v.name, "gflops": v.transformer_gflops, "decode": v.decode_gflops,
                 "malloc": v.malloc_tuned, "info": v.info} for v in vs]
    vs, dev = _variants(job, job["variant"])
    if len(vs) != 1:
        raise VarcompressError(f"bench worker: variant {job['variant']!r} not found")
    v, B = vs[0], job["batch"]
    labels = [(7 * i + 3) % int(v.info.get("num_classes", 10)) for i in range(B)]
    for _ in range(job["warmup"]):
        time_one(v, B, labels, dev)
    return time_one(v, B, labels, dev)


def measure_fresh(models: list[str], batches: list[int], rounds: int, warmup: int, budgets: list[str],
                  device: str, threads: int, bf16: bool, calib: int, act_eager: bool, extras: tuple[str, ...],
                  students: list[str], log=print) -> list[dict]:
    """Rows as `bench.measure` returns them; each timed run in a new process."""
    module, rows = "varcompress.engine.bench_fresh", []
    for name in models:
        base = {"model": name, "device": device, "budgets": list(budgets), "bf16": bool(bf16), "calib": calib,
                "act_eager": act_eager, "extras": list(extras), "students": list(students)}
        listing = run_once(module, {**base, "op": "list"}, threads)
        if isinstance(listing, dict):  # {"skip": why}: e.g. a testbed teacher that is not installed
            log(f"[bench] skipping {name}: {listing['skip']}")
            continue
        jobs = [{**base, "op": "time", "variant": v["name"], "batch": B, "warmup": warmup,
                 "label": f"{name} {v['name']} B={B}"} for B in batches for v in listing]
        recs = run_rounds(module, jobs, rounds, threads, log=lambda m: log(f"[bench] {m}"))
        meta = {v["name"]: v for v in listing}
        for job, rs in zip(jobs, recs):
            m = meta[job["variant"]]
            v = Variant(name, m["name"], None, m["gflops"], m["decode"], m["malloc"], None, m["info"])
            rows.append(_row(v, job["batch"], rs))
    return rows


def run_fresh_benchmark(models: list[str], batches: list[int], rounds: int = 3, warmup: int = 1,
                        budgets: list[str] | None = None, device: str = "cpu", threads: int = 1,
                        bf16: bool | None = None, calib: int = 2, act_eager: bool = True, out_dir: Path | None = None,
                        stem: str = "bench", extras: tuple[str, ...] = (), log=print,
                        students: list[str] | None = None) -> dict:
    """`run_benchmark`'s result (rows, meta; JSON + Markdown when out_dir), every run in a fresh process."""
    dev = torch.device(device)
    if bf16 is None:
        bf16 = dev.type == "cuda" or cpu_supports_bf16()
    rows = measure_fresh(models, batches, rounds, warmup, list(budgets or []), device, threads, bf16, calib,
                         act_eager, extras, list(students or []), log)
    meta = run_meta(dev, rounds, warmup, models=models, batches=batches, budgets=budgets, calib=calib,
                    extras=list(extras), students=list(students or []), fresh_process=True)
    meta["device"]["threads"] = threads  # the workers' (fixed) count, not this process's
    if out_dir is not None:
        js, md = write_results(rows, meta, Path(out_dir), stem)
        log(f"[bench] wrote {js} and {md}")
    else:
        add_speedups(rows)
    return {"meta": meta, "rows": rows}


if __name__ == "__main__":
    worker_main(worker)
