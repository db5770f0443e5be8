"""Timing in fresh processes: every measured run in its own new Python process.

Why: in one process the later variants run on a heap (and caches, thread pools) shaped by
the earlier ones; docs/PERFORMANCE.md recorded a 0.35 vs 0.49 s swing of the same call from
heap history alone. Here each job (a model, path and batch) runs in a new process with a
fixed thread count, once per round; rounds alternate the order (forward, reverse) so
drift and contention hit all jobs alike. A worker module prints one JSON record as the
last line of its stdout; `{"refused": why}` means the job cannot run (e.g. the engine
refuses a model) and is reported as null, not as an error.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from ..errors import VarcompressError

ROOT = Path(__file__).resolve().parents[2]  # the directory holding the varcompress package


def fresh_env(threads: int | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if threads:
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[k] = str(threads)
    return env


def run_once(module: str, job: dict, threads: int | None, timeout: float = 3600.0) -> dict:
    """One job in one new process; its JSON record."""
    try:
        p = subprocess.run([sys.executable, "-m", module, json.dumps(job)], capture_output=True, text=True,
                           env=fresh_env(threads), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise VarcompressError(f"timing process {job.get('label', module)}: no result after {timeout:.0f} s") from None
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        why = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise VarcompressError(f"timing process {job.get('label', module)} failed: {why}")
    return json.loads(lines[-1])


def run_rounds(module: str, jobs: list[dict], rounds: int, threads: int | None, log=None) -> list[list[dict]]:
    """Every job once per round, each in a fresh process; the order alternates between rounds."""
    recs: list[list[dict]] = [[] for _ in jobs]
    for r in range(rounds):
        order = list(range(len(jobs)))
        for i in (order if r % 2 == 0 else order[::-1]):
            rec = run_once(module, jobs[i], threads)
            recs[i].append(rec)
            if log is not None:
                what = "refused" if "refused" in rec else f"{rec['s']:.3f} s wall, {rec['cpu_s']:.3f} s CPU"
                log(f"latency round {r + 1}/{rounds}: {jobs[i].get('label', i)}: {what}")
    return recs


def summarize(recs: list[dict]) -> dict | None:
    """Median and spread (min, max) of wall and CPU seconds over rounds; None if refused."""
    if not recs or any("refused" in r for r in recs):
        return None
    wall, cpu = [r["s"] for r in recs], [r["cpu_s"] for r in recs]
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu), "wall_all": wall, "cpu_all": cpu}


def worker_main(worker) -> None:
    """The worker side of the protocol: run `worker(job)` on the JSON job in argv[1], print its record
    as one JSON line; a refused job is one line on stderr and exit 2."""
    try:
        print(json.dumps(worker(json.loads(sys.argv[1]))))
    except VarcompressError as e:
        print(str(e), file=sys.stderr)
        sys.exit(2)
