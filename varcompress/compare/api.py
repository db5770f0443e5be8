"""`compare(...)`: every model against one teacher, one protocol -> table.md, table.csv, report.json,
grids/<method>.png (teacher | model, same classes and seeds), pareto.png (quality vs FLOPs) and
pareto_latency.png (quality vs measured latency), written to a temporary directory and renamed
into place (refused if the output exists, unless force). Quality over several sampling seeds
(mean and spread), latency in fresh processes (`compare.timing`), and per row what trained it
(`compare.training`): the table states the budget instead of asserting it.
"""
from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..durable import atomic_dir
from ..errors import VarcompressError
from ..evaluate import EvalProtocol, eval_maps
from ..flops import var_flops
from ..generate.images import per_class_labels, sample_classes
from ..resolve import default_sampling
from ..streams import derive_seed
from ..version import __version__
from . import report as rp
from .measure import QUALITY, quality_over_seeds, relative_metrics, size_and_flops
from .models import Entry, load_model
from .schema import SCHEMA_VERSION, validate_report
from .timing import time_models
from .training import training_info


@dataclass
class CompareOptions:
    n_per_class: int = 50
    seed: int = 0                  # base of the evaluation streams (maps, same-seed images, real reference)
    seeds: list = field(default_factory=lambda: [0, 1, 2])  # sampling seeds of the testbed metrics
    teacher_maps: int = 64
    same_seed: int = 32
    grid_per_class: int = 8
    batches: list = field(default_factory=lambda: [1, 16])  # latency batch sizes
    rounds: int = 3                # fresh-process timing rounds (alternating order)
    warmup: int = 1
    threads: int = 1               # torch threads of every timing process
    sampling: dict | None = None   # None: the testbed card's, else the official (resolve.default_sampling)
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

    def check(self) -> "CompareOptions":
        for k in ("n_per_class", "teacher_maps", "same_seed", "grid_per_class", "rounds", "threads"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < (2 if k == "n_per_class" else 1):
                lo = 2 if k == "n_per_class" else 1
                raise VarcompressError(f"compare: {k} must be an integer >= {lo}, got {v!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise VarcompressError(f"compare: warmup must be an integer >= 0, got {self.warmup!r}")
        for k, lo in (("seeds", 0), ("batches", 1)):
            v = getattr(self, k)
            if not isinstance(v, list) or not v or any(isinstance(x, bool) or not isinstance(x, int) or x < lo
                                                       for x in v) or len(set(v)) != len(v):
                raise VarcompressError(f"compare: {k} must be a non-empty list of distinct integers >= {lo}, "
                                       f"got {v!r}")
        return self


def _check_shape(m, teacher) -> None:
    a, b = m.var.cfg, teacher.cfg
    if (a.embed_dim, a.vocab_size, a.num_classes, tuple(a.patch_nums)) != \
            (b.embed_dim, b.vocab_size, b.num_classes, tuple(b.patch_nums)):
        raise VarcompressError(f"{m.spec}: not comparable with the teacher (width, vocabulary, classes or "
                               "scales differ)")


def _quality(m, teacher, dataset, proto, maps, is_teacher: bool, opts):
    q = {k: None for k in QUALITY}
    q.update({f"{k}_std": None for k in QUALITY})
    per_seed = None
    if dataset is not None:
        tb, images = quality_over_seeds(m.var, dataset, proto, opts.seeds)
        per_seed = tb.pop("per_seed")
        q.update(tb)
    else:
        labels = per_class_labels(min(m.var.num_classes, 10), opts.grid_per_class)
        images = sample_classes(m.var, labels, seed=derive_seed(opts.seeds[0], "sampling"), **proto.sampling)
    if is_teacher:
        rel = {"kl": 0.0, "top1": 1.0, "token_agreement": 1.0, "psnr_db": None, "per_scale": {}}
    else:
        rel = relative_metrics(m.var, teacher, maps, proto)
    return q, rel, images, per_seed


def compare(entries: list[Entry], out: str | os.PathLike, dataset: str | None = None, teacher: str | None = None,
            vae_path=None, opts: CompareOptions | None = None, force: bool = False, log=print) -> dict:
    """Measure `entries` (the teacher is always the first row) and write the outputs to `out`."""
    opts = (opts or CompareOptions()).check()
    out = Path(out)
    if out.exists() and not force:
        raise VarcompressError(f"{out}: exists (use --force to overwrite)")
    if not entries:
        raise VarcompressError("compare: no models given")
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels) or len({rp.slug(x) for x in labels}) != len(labels):
        raise VarcompressError(f"compare: model labels must be unique (got {', '.join(labels)})")
    teacher_spec = teacher or dataset
    if teacher_spec is None:
        raise VarcompressError("compare: give --dataset (a testbed) or --teacher")
    t = load_model(Entry("teacher", teacher_spec), dataset=dataset, vae_path=vae_path)
    if t.kind not in ("teacher", "dense"):
        raise VarcompressError(f"--teacher {teacher_spec}: must be a dense VAR, got a {t.kind} model")
    if t.var.vae is None:
        raise VarcompressError(f"--teacher {teacher_spec}: needs its VQVAE (--vae)")
    models = [load_model(e, vae=t.var.vae, dataset=dataset) for e in entries]
    for m in models:
        _check_shape(m, t.var)
    dev = torch.device(opts.device)
    for m in [t] + models:
        m.var.to(dev).eval()
        m.var.vae.to(dev)
    sampling = dict(opts.sampling or default_sampling(dataset))
    proto = EvalProtocol(n_per_class=opts.n_per_class, seed=opts.seed, sampling=sampling,
                         teacher_maps=opts.teacher_maps, same_seed=opts.same_seed)
    maps = eval_maps(t.var, proto)
    teacher_g = var_flops(t.var.cfg).transformer
    rows, images = [], {}
    everything = [(Entry(f"teacher ({teacher_spec})", teacher_spec), t, True)] + \
        [(e, m, False) for e, m in zip(entries, models)]
    for e, m, is_t in everything:
        log(f"measuring {e.label}")
        q, rel, imgs, per_seed = _quality(m, t.var, dataset, proto, maps, is_t, opts)
        details = {"info": m.info, "per_scale": rel.pop("per_scale"), "quality_per_seed": per_seed}
        rows.append({"method": e.label, "spec": e.spec, "kind": "teacher" if is_t else m.kind,
                     "training": training_info(e.spec, "teacher" if is_t else m.kind, m.info),
                     **size_and_flops(m.var, teacher_g), **q, **rel, "grid": None,
                     "details": json.loads(json.dumps(details, default=str))})
        images[e.label] = imgs
    where = {"dataset": dataset, "vae": None if vae_path is None else str(vae_path)}
    timing = time_models([(e.label, e.spec) for e, _, _ in everything], where, opts.batches, opts.rounds,
                         opts.warmup, opts.threads, sampling, opts.device, log=log)
    for r, tm in zip(rows, timing):
        r.update(latency_columns(tm, max(opts.batches)))
        r["timing"] = tm
    return _write(out, rows, images, t, teacher_spec, dataset, proto, opts, force)


def latency_columns(timing: list[dict], batch: int) -> dict:
    """The flat columns: eager and engine wall-clock medians at the largest batch."""
    out = {}
    for path, key in (("eager", "latency_s"), ("engine", "engine_latency_s")):
        s = next((x["wall_s"] for x in timing if x["path"] == path and x["batch"] == batch), None)
        out[key] = s
        out[key.replace("latency_s", "throughput_img_s")] = batch / s if s else None
    return out


def _write(out: Path, rows, images, t, teacher_spec, dataset, proto, opts, force) -> dict:
    with atomic_dir(out, force=True) as tmp:  # compare() refused an existing `out` before measuring
        (tmp / "grids").mkdir()
        n_cls = min(t.var.num_classes, 10) if dataset is None else t.var.num_classes
        stride = proto.n_per_class if dataset is not None else opts.grid_per_class
        per = min(opts.grid_per_class, stride)
        t_imgs = rp.grid_images(images[rows[0]["method"]], stride, n_cls, per)
        grids = {}
        for r in rows[1:]:
            name = f"grids/{rp.slug(r['method'])}.png"
            imgs = rp.grid_images(images[r["method"]], stride, n_cls, per)
            rp.save_png(rp.side_by_side(t_imgs, imgs, per, ("teacher", r["method"])), tmp / name)
            r["grid"] = grids[r["method"]] = name
        name = dataset or teacher_spec
        pareto = "pareto.png" if rp.pareto_plot(rows, tmp / "pareto.png", name, "gflops") else None
        pareto_lat = "pareto_latency.png" if rp.pareto_plot(rows, tmp / "pareto_latency.png", name,
                                                             "latency") else None
        report = {"format": "varcompress-compare", "schema_version": SCHEMA_VERSION,
                  "varcompress_version": __version__,
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "dataset": dataset, "teacher": teacher_spec, "protocol": proto.to_dict(),
                  "quality_seeds": list(opts.seeds),
                  "latency": {"batches": list(opts.batches), "rounds": opts.rounds, "warmup": opts.warmup,
                              "threads": opts.threads, "device": opts.device, "fresh_process": True},
                  "rows": rows, "files": {"markdown": "table.md", "csv": "table.csv", "json": "report.json",
                                          "pareto": pareto, "pareto_latency": pareto_lat, "grids": grids}}
        validate_report(report)
        (tmp / "table.md").write_text(rp.markdown(report))
        (tmp / "table.csv").write_text(rp.csv_text(rows, opts.batches))
        (tmp / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
        if out.exists() and not force:
            raise VarcompressError(f"{out}: exists (use --force to overwrite)")
    return report
