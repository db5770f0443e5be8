"""`compare(...)`: every model against one teacher, one protocol -> table.md, table.csv, report.json,
grids/<method>.png (teacher | model, same classes and seeds) and pareto.png, written to a temporary
directory and renamed into place (refused if the output exists, unless force).
"""
from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..checkpoint import atomic_dir
from ..errors import VarcompressError
from ..streams import derive_seed
from .models import Entry, load_model
from .schema import SCHEMA_VERSION, validate_report


@dataclass
class CompareOptions:
    n_per_class: int = 50
    seed: int = 0
    teacher_maps: int = 64
    same_seed: int = 32
    grid_per_class: int = 8
    batch: int = 16
    repeats: int = 5
    warmup: int = 1
    sampling: dict | None = None   # None: the testbed card's (else the official 1.5 / 900 / 0.96)
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

    def check(self) -> "CompareOptions":
        for k in ("n_per_class", "teacher_maps", "same_seed", "grid_per_class", "batch", "repeats"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < (2 if k == "n_per_class" else 1):
                lo = 2 if k == "n_per_class" else 1
                raise VarcompressError(f"compare: {k} must be an integer >= {lo}, got {v!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise VarcompressError(f"compare: warmup must be an integer >= 0, got {self.warmup!r}")
        return self


def _check_shape(m, teacher) -> None:
    a, b = m.var.cfg, teacher.cfg
    if (a.embed_dim, a.vocab_size, a.num_classes, tuple(a.patch_nums)) != \
            (b.embed_dim, b.vocab_size, b.num_classes, tuple(b.patch_nums)):
        raise VarcompressError(f"{m.spec}: not comparable with the teacher (width, vocabulary, classes or "
                               "scales differ)")


def _quality(m, teacher, dataset, proto, maps, is_teacher: bool, grid_per_class: int):
    from ..evaluate import testbed_metrics
    from ..generation import per_class_labels, sample_classes
    from .measure import relative_metrics

    q = dict.fromkeys(("accuracy", "fid", "precision", "recall"))
    if dataset is not None:
        tb, images = testbed_metrics(m.var, dataset, proto)
        q.update({k: tb[k] for k in q})
    else:
        labels = per_class_labels(min(m.var.num_classes, 10), grid_per_class)
        images = sample_classes(m.var, labels, seed=proto.seed, **proto.sampling)
    if is_teacher:
        rel = {"kl": 0.0, "top1": 1.0, "token_agreement": 1.0, "psnr_db": None, "per_scale": {}}
    else:
        rel = relative_metrics(m.var, teacher, maps, proto)
    return q, rel, images


def compare(entries: list[Entry], out: str | os.PathLike, dataset: str | None = None, teacher: str | None = None,
            vae_path=None, opts: CompareOptions | None = None, force: bool = False, log=print) -> dict:
    """Measure `entries` (the teacher is always the first row) and write the outputs to `out`."""
    from ..evaluate import EvalProtocol
    from ..flops import var_flops
    from ..teacher_tokens import balanced_labels, draw_token_maps
    from ..testbed.teachers import teacher_card
    from . import report as rp
    from .measure import size_and_flops, time_generation

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
    sampling = dict(opts.sampling or (teacher_card(dataset).get("sampling") if dataset else None)
                    or dict(cfg=1.5, top_k=900, top_p=0.96))
    proto = EvalProtocol(n_per_class=opts.n_per_class, seed=opts.seed, sampling=sampling,
                         teacher_maps=opts.teacher_maps, same_seed=opts.same_seed)
    maps = draw_token_maps(t.var, balanced_labels(proto.teacher_maps, t.var.num_classes), seed=derive_seed(proto.seed, "eval_maps"),
                           **sampling)
    teacher_g = var_flops(t.var.cfg).transformer
    rows, images = [], {}
    everything = [(Entry(f"teacher ({teacher_spec})", teacher_spec), t, True)] + \
        [(e, m, False) for e, m in zip(entries, models)]
    for e, m, is_t in everything:
        log(f"measuring {e.label}")
        q, rel, imgs = _quality(m, t.var, dataset, proto, maps, is_t, opts.grid_per_class)
        details = {"info": m.info, "per_scale": rel.pop("per_scale")}
        rows.append({"method": e.label, "spec": e.spec, "kind": "teacher" if is_t else m.kind,
                     **size_and_flops(m.var, teacher_g), "latency_s": None, "throughput_img_s": None,
                     "engine_latency_s": None, "engine_throughput_img_s": None, **q, **rel,
                     "grid": None, "details": json.loads(json.dumps(details, default=str))})
        images[e.label] = imgs
    secs = time_generation([m.var for _, m, _ in everything], opts.batch, opts.repeats, opts.warmup, sampling,
                           seed=opts.seed, log=log)
    for r, (s, s_eng) in zip(rows, secs):
        r["latency_s"], r["throughput_img_s"] = s, opts.batch / s
        if s_eng is not None:
            r["engine_latency_s"], r["engine_throughput_img_s"] = s_eng, opts.batch / s_eng
    return _write(out, rows, images, t, teacher_spec, dataset, proto, opts, force)


def _write(out: Path, rows, images, t, teacher_spec, dataset, proto, opts, force) -> dict:
    from . import report as rp

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
        title = f"{dataset or teacher_spec}: quality vs transformer FLOPs"
        pareto = "pareto.png" if rp.pareto_plot(rows, tmp / "pareto.png", title) else None
        report = {"format": "varcompress-compare", "schema_version": SCHEMA_VERSION,
                  "varcompress_version": __version__,
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "dataset": dataset, "teacher": teacher_spec, "protocol": proto.to_dict(),
                  "latency": {"batch": opts.batch, "repeats": opts.repeats, "warmup": opts.warmup,
                              "threads": torch.get_num_threads(), "device": opts.device},
                  "rows": rows, "files": {"markdown": "table.md", "csv": "table.csv", "json": "report.json",
                                          "pareto": pareto, "grids": grids}}
        validate_report(report)
        (tmp / "table.md").write_text(rp.markdown(report))
        (tmp / "table.csv").write_text(rp.csv_text(rows))
        (tmp / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
        if out.exists() and not force:
            raise VarcompressError(f"{out}: exists (use --force to overwrite)")
    return report
