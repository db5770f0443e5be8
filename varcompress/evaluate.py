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

from .generation import per_class_labels, sample_classes
from .streams import derive_seed


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
    from .metrics.testbed_eval import TestbedEvaluator, real_pool

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


def teacher_metrics(student, teacher, proto: EvalProtocol) -> dict:
    """KL / top-1 agreement on teacher-drawn maps and same-seed token agreement / PSNR."""
    from .metrics.teacher_relative import same_seed_agreement, teacher_forced_agreement
    from .teacher_tokens import balanced_labels, draw_token_maps

    maps = draw_token_maps(teacher, balanced_labels(proto.teacher_maps, teacher.num_classes),
                           seed=derive_seed(proto.seed, "eval_maps"), **proto.sampling)
    out = teacher_forced_agreement(student, teacher, maps)
    out.update(same_seed_agreement(student, teacher, balanced_labels(proto.same_seed, teacher.num_classes),
                                   seed=derive_seed(proto.seed, "same_seed"), **proto.sampling))
    return out
