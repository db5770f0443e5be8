"""One evaluation protocol for every model on the testbed (teacher, students, baselines).

Testbed metrics: `n_per_class` samples per class, scored by the shipped classifier
against a fixed real reference of the same size (the first half of a real pool of
2n, as in `reference_scores`, so the floor and ceiling are directly comparable).
Teacher-relative metrics: KL / top-1 on teacher-drawn token maps and same-seed
agreement. All seeds are fixed and derived per purpose (`streams.derive_seed`), disjoint from
every training and calibration draw: two runs print the same numbers.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from .errors import VarcompressError
from .generate.images import per_class_labels, sample_classes
from .generate.tokens import TokenMaps, balanced_labels, draw_token_maps
from .metrics.teacher_relative import same_seed_agreement, teacher_forced_agreement
from .metrics.testbed import TestbedEvaluator, real_pool
from .resolve import default_sampling, resolve_model
from .streams import derive_seed
from .viz import save_grid


@dataclass
class EvalProtocol:
    n_per_class: int = 50
    seed: int = 0
    sampling: dict = field(default_factory=lambda: dict(cfg=1.5, top_k=0, top_p=0.0))
    teacher_maps: int = 64      # teacher-drawn token maps for KL / top-1
    same_seed: int = 32         # images for same-seed token agreement / PSNR

    def to_dict(self) -> dict:
        return asdict(self)


_EVALUATORS: dict = {}


def testbed_evaluator(dataset: str, n: int, seed: int = 0):
    """The evaluator whose reference is the first half of a real pool of 2n (cached)."""
    key = (dataset, n, seed)
    if key not in _EVALUATORS:
        x, _ = real_pool(dataset, 2 * n, seed)
        _EVALUATORS[key] = TestbedEvaluator(dataset, reference=x[:n])
    return _EVALUATORS[key]


def testbed_metrics(var, dataset: str, proto: EvalProtocol, progress: bool = False,
                    sample_seed: int | None = None) -> tuple[dict, torch.Tensor]:
    """Sample n_per_class images per class; return (metrics, images grouped by class).

    `sample_seed` (default proto.seed) picks the sampling stream; the real reference stays
    the one of proto.seed, so metrics over several sampling seeds measure sampling noise."""
    labels = per_class_labels(var.num_classes, proto.n_per_class)
    t0 = time.perf_counter()
    seed = derive_seed(proto.seed if sample_seed is None else sample_seed, "sampling")
    images = sample_classes(var, labels, seed=seed, progress=progress, **proto.sampling)
    seconds = time.perf_counter() - t0
    metrics = testbed_evaluator(dataset, len(labels), proto.seed).evaluate(images, labels)
    metrics["sample_seconds"] = seconds
    return metrics, images


def eval_maps(teacher, proto: EvalProtocol) -> TokenMaps:
    """The protocol's teacher-drawn token maps (`compare` draws them once for every model)."""
    return draw_token_maps(teacher, balanced_labels(proto.teacher_maps, teacher.num_classes),
                           seed=derive_seed(proto.seed, "eval_maps"), **proto.sampling)


def teacher_metrics(student, teacher, proto: EvalProtocol, maps: TokenMaps | None = None) -> dict:
    """KL / top-1 agreement on teacher-drawn maps (`eval_maps` unless given) and same-seed token
    agreement / PSNR."""
    out = teacher_forced_agreement(student, teacher, eval_maps(teacher, proto) if maps is None else maps)
    out.update(same_seed_agreement(student, teacher, balanced_labels(proto.same_seed, teacher.num_classes),
                                   seed=derive_seed(proto.seed, "same_seed"), **proto.sampling))
    return out


def evaluate_model(model: str, vae=None, dataset: str | None = None, teacher: str | None = None,
                   n_per_class: int = 50, seed: int = 0, grid=None, force: bool = False, progress: bool = False,
                   show=None, **given) -> dict:
    """What `varcompress eval` does: testbed metrics (when the model's data set is known; `grid`: a PNG
    of the samples, a row per class) and metrics against `teacher` (when given), under one protocol
    whose sampling settings given as None are the testbed card's, else the official ones.

    `show(title, metrics)` gets each set of metrics as soon as it is measured. Returns
    {model, kind, dataset, protocol, testbed?, teacher_relative?}.
    """
    if n_per_class < 2:
        raise VarcompressError("--n-per-class must be >= 2")
    show = show or (lambda title, metrics: None)
    m = resolve_model(model, vae, dataset)
    sampling = default_sampling(m.dataset, **given)
    proto = EvalProtocol(n_per_class=n_per_class, seed=seed, sampling=sampling)
    result = {"model": m.label, "kind": m.kind, "dataset": m.dataset, "protocol": proto.to_dict()}
    if m.dataset is not None:
        result["testbed"], images = testbed_metrics(m.var, m.dataset, proto, progress=progress)
        show(f"{m.label} on {m.dataset} ({proto.n_per_class}/class, sampling {sampling})", result["testbed"])
        if grid is not None:
            save_grid(images, grid, nrow=n_per_class if n_per_class <= 16 else 16, upscale=2, force=force)
    if teacher is not None:
        t = resolve_model(teacher, vae, m.dataset)
        result["teacher_relative"] = teacher_metrics(m.var, t.var, proto)
        show(f"against {t.label}", result["teacher_relative"])
    if m.dataset is None and teacher is None:
        raise VarcompressError("nothing to measure: give --dataset (testbed metrics) or --teacher")
    return result
