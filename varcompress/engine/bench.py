"""Generation benchmark: every variant in one process, interleaved, median of repeats.

Contention from other processes then hits all variants alike. Each repeat runs the
variants in a rotated order. Reported per (model, variant, batch): median latency,
images/s, peak memory (CPU: peak RSS growth during the run, via /proc/self VmHWM
reset; GPU: torch.cuda.max_memory_allocated), GFLOPs per image (transformer from
`varcompress.flops`, decoder counted on the meta device) and, for engine variants,
the breakdown transformer / sampling / next-scale input / decode. Besides wall-clock
time, each run's process CPU time is recorded: with one thread it measures the work
done and is insensitive to other processes taking the cores; speedups are medians of
per-repeat ratios (variants of one repeat run back to back).
"""
from __future__ import annotations

import gc
import json
import statistics
import time
from pathlib import Path

import torch

from ..durable import atomic_write
from ..models.sampler import OFFICIAL_SAMPLING
from .bench_models import Variant, build_model, decode_variants, load_students, variants_for
from .cpu import cpu_supports_bf16, describe_device, set_malloc

PARTS = ("transformer", "sampling", "next_input", "decode")


def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak(device: torch.device) -> float | None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _status_mb("VmRSS")


def _peak(device: torch.device, base: float | None) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20 - (base or 0.0)
    hwm = _status_mb("VmHWM")
    return None if hwm is None or base is None else hwm - base


def time_one(v: Variant, B: int, labels: list[int], device: torch.device) -> dict:
    set_malloc(v.malloc_tuned)  # the eager reference runs with glibc's default thresholds
    gc.collect()
    base = _reset_peak(device)
    c0, t0 = time.process_time(), time.perf_counter()
    v.run(B, labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    rec = {"s": dt, "cpu_s": cpu, "peak_mb": _peak(device, base)}
    if v.timings is not None:
        rec["parts"] = v.timings()
    return rec


def measure(variants: list[Variant], batches: list[int], repeats: int, warmup: int,
            device: torch.device, log=print) -> list[dict]:
    rows = []
    for B in batches:
        by_model = {}
        for v in variants:
            by_model.setdefault(v.model, []).append(v)
        for model, vs in by_model.items():
            n_cls = _num_classes(vs[0])
            labels = [(7 * i + 3) % n_cls for i in range(B)]
            for v in vs:
                for _ in range(warmup):
                    time_one(v, B, labels, device)
            recs = {v.name: [] for v in vs}
            for r in range(repeats):
                k = r % len(vs)
                for v in vs[k:] + vs[:k]:
                    rec = time_one(v, B, labels, device)
                    recs[v.name].append(rec)
                    log(f"[bench] {model} B={B} rep {r} {v.name}: {rec['s']:.2f} s")
            for v in vs:
                rows.append(_row(v, B, recs[v.name]))
    set_malloc(False)
    return rows


def _num_classes(v: Variant) -> int:
    return int(v.info.get("num_classes", 10))


def _row(v: Variant, B: int, recs: list[dict]) -> dict:
    s = [r["s"] for r in recs]
    med = statistics.median(s)
    peaks = [r["peak_mb"] for r in recs if r["peak_mb"] is not None]
    cpu = [r["cpu_s"] for r in recs]
    row = {"model": v.model, "variant": v.name, "batch": B, "median_s": med, "min_s": min(s), "all_s": s,
           "median_cpu_s": statistics.median(cpu), "all_cpu_s": cpu, "images_per_s": B / med,
           "peak_mem_mb": max(peaks) if peaks else None,
           "transformer_gflops_per_image": v.transformer_gflops, "decode_gflops_per_image": v.decode_gflops,
           "malloc_tuned": v.malloc_tuned, **v.info}
    parts = [r["parts"] for r in recs if r.get("parts")]
    if parts:
        row["breakdown_s"] = {p: statistics.median(x.get(p, 0.0) for x in parts) for p in PARTS}
        if all(f"cpu_{p}" in x for x in parts for p in PARTS):
            row["breakdown_cpu_s"] = {p: statistics.median(x[f"cpu_{p}"] for x in parts) for p in PARTS}
    return row


def _paired(ref: dict, r: dict, key: str) -> float:
    """Median over repeats of ref/r measured in the same repeat (robust to drifting machine load)."""
    a, b = ref.get("all_" + key), r.get("all_" + key)
    if a and b and len(a) == len(b):
        return statistics.median(x / y for x, y in zip(a, b))
    return ref["median_" + key] / r["median_" + key]


def add_speedups(rows: list[dict]) -> None:
    """Speedups vs the eager reference and vs the dense engine of the same dtype (same model and batch):
    wall clock and process CPU time, each the median of per-repeat ratios."""
    key = {(r["model"], r["batch"], r["variant"]): r for r in rows}
    for r in rows:
        eager = key.get((r["model"], r["batch"], "eager"))
        if eager:
            r["speedup_vs_eager"] = _paired(eager, r, "s")
            if r.get("median_cpu_s"):
                r["cpu_speedup_vs_eager"] = _paired(eager, r, "cpu_s")
        tag = r["variant"].rsplit("-", 1)[-1]
        eager_bf16 = key.get((r["model"], r["batch"], "eager-bf16"))
        if eager_bf16 and tag.startswith("bf16") and r is not eager_bf16:  # like for like: both in bf16
            r["speedup_vs_eager_bf16"] = _paired(eager_bf16, r, "s")
            if r.get("median_cpu_s"):
                r["cpu_speedup_vs_eager_bf16"] = _paired(eager_bf16, r, "cpu_s")
        dense = key.get((r["model"], r["batch"], f"engine-{tag}"))
        if dense and r is not dense and (r.get("budget") or r.get("fraction", 1.0) < 1):  # budgets, --student
            sp = r["speedup_vs_dense_engine"] = _paired(dense, r, "s")
            r["wallclock_saving_over_flops_saving"] = (1 - 1 / sp) / max(1e-9, 1 - r.get("fraction", 1.0))
            if r.get("median_cpu_s"):
                r["cpu_speedup_vs_dense_engine"] = _paired(dense, r, "cpu_s")
            bd, bdd = (r.get("breakdown_cpu_s"), dense.get("breakdown_cpu_s")) if r.get("breakdown_cpu_s") \
                else (r.get("breakdown_s"), dense.get("breakdown_s"))
            if bd and bdd and bd["transformer"] > 0:
                ts = bdd["transformer"] / bd["transformer"]
                r["transformer_speedup_vs_dense_engine"] = ts
                r["transformer_saving_over_flops_saving"] = (1 - 1 / ts) / max(1e-9, 1 - r.get("fraction", 1.0))


def markdown(rows: list[dict], meta: dict) -> str:
    dev = meta["device"]
    lines = [f"Device: {dev.get('name')} ({dev.get('device')}, threads={dev.get('threads', '-')}); "
             f"torch {meta['torch']}; protocol cfg={OFFICIAL_SAMPLING['cfg']} "
             f"top_k={OFFICIAL_SAMPLING['top_k']} "
             f"top_p={OFFICIAL_SAMPLING['top_p']}; median of {meta['repeats']} (warm-up {meta['warmup']}).", "",
             "| model | variant | B | s/batch | CPU s | img/s | x eager (wall / CPU) | x eager-bf16 (wall / CPU) "
             "| x dense engine (wall / CPU "
             "/ transformer) | transformer GFLOPs/img (frac) | peak mem MB | transformer / sampling / next-input "
             "/ decode s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bd = r.get("breakdown_s")
        bds = " / ".join(f"{bd[p]:.2f}" for p in PARTS) if bd else "-"
        f = lambda k, fmt: (fmt.format(r[k]) if r.get(k) is not None else "-")  # noqa: E731
        lines.append(f"| {r['model']} | {r['variant']} | {r['batch']} | {r['median_s']:.3f} "
                     f"| {f('median_cpu_s', '{:.3f}')} | {r['images_per_s']:.3f} "
                     f"| {f('speedup_vs_eager', '{:.2f}')} / {f('cpu_speedup_vs_eager', '{:.2f}')} "
                     f"| {f('speedup_vs_eager_bf16', '{:.2f}')} / {f('cpu_speedup_vs_eager_bf16', '{:.2f}')} "
                     f"| {f('speedup_vs_dense_engine', '{:.2f}')} / {f('cpu_speedup_vs_dense_engine', '{:.2f}')} "
                     f"/ {f('transformer_speedup_vs_dense_engine', '{:.2f}')} "
                     f"| {r['transformer_gflops_per_image']:.1f} ({r.get('fraction', 1.0):.2f}) "
                     f"| {f('peak_mem_mb', '{:.0f}')} | {bds} |")
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], meta: dict, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """The JSON and Markdown reports, each written atomically and durably (`checkpoint.atomic_write`)."""
    add_speedups(rows)
    js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    js_text, md_text = json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n", markdown(rows, meta)
    atomic_write(js, lambda tmp: Path(tmp).write_text(js_text))
    atomic_write(md, lambda tmp: Path(tmp).write_text(md_text))
    return js, md


def run_meta(device: torch.device, repeats: int, warmup: int, **extra) -> dict:
    return {"device": describe_device(device), "torch": torch.__version__, "repeats": repeats, "warmup": warmup,
            "protocol": dict(OFFICIAL_SAMPLING), "time": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}


def run_benchmark(models: list[str], batches: list[int], repeats: int = 3, warmup: int = 0,
                  budgets: list[str] | None = None, device: str = "cpu", threads: int | None = None,
                  bf16: bool | None = None, calib: int = 2, act_eager: bool = True, decode: bool = False,
                  out_dir: Path | None = None, stem: str = "bench", extras: tuple[str, ...] = (),
                  log=print, students: list[str] | None = None) -> dict:
    """Build every model's variants, measure them interleaved, write JSON + Markdown; returns the data."""
    dev = torch.device(device)
    if threads:
        torch.set_num_threads(threads)
    if bf16 is None:
        bf16 = dev.type == "cuda" or cpu_supports_bf16()
    rows = []
    for name in models:
        try:
            var, vae = build_model(name, dev)
        except Exception as e:  # noqa: BLE001 - a missing teacher skips that model, with the reason
            log(f"[bench] skipping {name}: {e}")
            continue
        vs = variants_for(name, var, vae, dev, list(budgets or []), bf16, calib, act_eager, extras=extras,
                          log=log, students=load_students(name, var, list(students or []), dev))
        if decode:
            vs += decode_variants(name, vae, dev, bf16)
            for v in vs:
                v.info.setdefault("num_classes", var.num_classes)
        rows += measure(vs, batches, repeats, warmup, dev, log)
        del vs, var, vae
        gc.collect()
    meta = run_meta(dev, repeats, warmup, models=models, batches=batches, budgets=budgets, calib=calib,
                    extras=list(extras), students=list(students or []))
    result = {"meta": meta, "rows": rows}
    if out_dir is not None:
        js, md = write_results(rows, meta, Path(out_dir), stem)
        log(f"[bench] wrote {js} and {md}")
    else:
        add_speedups(rows)
    return result
