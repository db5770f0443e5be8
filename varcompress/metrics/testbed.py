"""The testbed metric set: generated testbed images scored against real ones with the shipped classifier.

`TestbedEvaluator(name).evaluate(images, labels)` gives the class-conditional accuracy
(does the classifier agree with the requested label?), FID on the classifier's 128-d
features, and improved precision/recall. `reference_scores(name, n)` measures the
same numbers for two known points, so a model can be placed between them:
  floor   - real images vs other real images (the best any generator can do at this n),
  ceiling - a crude generator: its class's mean image plus Gaussian noise.
FID is biased upward at small n: compare models only at the same n and reference.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from ..errors import VarcompressError
from ..testbed.datasets import get_dataset, get_spec
from .classifier import embed, load_classifier
from .frechet import feature_stats, frechet_distance
from .precision_recall import precision_recall

DEFAULT_N_REF = {"shapes": 5000, "scenes": 5000}  # unlimited sets: this many test images; finite sets: all images
CEILING_NOISE = 0.15


def real_pool(name: str, n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Real images for reference statistics: the test stream of an unlimited set, or all
    train+test images of a finite one (seed-shuffled), first `n` kept."""
    spec = get_spec(name)
    if spec.split_sizes["test"] is None:
        return get_dataset(name, "test", n=n or DEFAULT_N_REF.get(name, 5000), seed=seed)
    parts = [get_dataset(name, s) for s in ("train", "test")]
    x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    if n is not None and n > len(y):
        raise VarcompressError(f"{name} has only {len(y)} real images, asked for {n}")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return x[perm], y[perm]


def _check_batch(images, labels, num_classes: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the generated batch: (B,3,size,size) finite values in [0,1], labels (B,) ints."""
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
        raise VarcompressError(f"images must have shape (B,3,{size},{size}), got {tuple(images.shape)}")
    if labels.shape != (images.shape[0],) or labels.is_floating_point():
        raise VarcompressError(f"labels must be ({images.shape[0]},) integers, got {tuple(labels.shape)} {labels.dtype}")
    images = images.detach().float().cpu()
    if not torch.isfinite(images).all():
        raise VarcompressError("images contain NaN or inf")
    if images.min() < -1e-3 or images.max() > 1 + 1e-3:
        raise VarcompressError(f"images must be in [0,1], got range [{images.min():.3g}, {images.max():.3g}]")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise VarcompressError(f"labels must be in [0, {num_classes - 1}]")
    return images.clamp(0, 1), labels.long().cpu()


class TestbedEvaluator:
    """Holds the classifier and the cached real-feature statistics of one testbed set."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, name: str, n_ref: int | None = None, reference: torch.Tensor | None = None, k: int = 3):
        self.name, self.k = name, k
        spec = get_spec(name)
        self.num_classes, self.image_size = len(spec.class_names), spec.image_size
        self.model = load_classifier(name)
        if reference is None:
            reference = real_pool(name, n_ref)[0]
        reference = _check_batch(reference, torch.zeros(len(reference), dtype=torch.long), 1, self.image_size)[0]
        self.ref_feats = embed(self.model, reference)[0].double()
        self.ref_mu, self.ref_sigma = feature_stats(self.ref_feats)
        self.n_ref = len(reference)

    def evaluate(self, images, labels, per_class: bool = False) -> dict:
        """dict(accuracy, fid, precision, recall, n) of generated `images` with their `labels`;
        `per_class` adds "class_accuracy", one entry per class (nan for a class with no image)."""
        images, labels = _check_batch(images, labels, self.num_classes, self.image_size)
        if len(labels) <= self.k:
            raise VarcompressError(f"need more than k={self.k} images to evaluate, got {len(labels)}")
        feats, logits = embed(self.model, images)
        mu, sigma = feature_stats(feats.double())
        precision, recall = precision_recall(self.ref_feats, feats.double(), k=self.k)
        hit = logits.argmax(1) == labels
        out = {
            "accuracy": float(hit.float().mean()),
            "fid": frechet_distance(self.ref_mu, self.ref_sigma, mu, sigma),
            "precision": precision,
            "recall": recall,
            "n": len(labels),
        }
        if per_class:
            counts = torch.bincount(labels, minlength=self.num_classes)
            hits = torch.bincount(labels[hit], minlength=self.num_classes)
            out["class_accuracy"] = (hits / counts).tolist()   # 0/0 = nan: a class not asked for
        return out


def class_mean_generator(name: str, n: int, noise: float = CEILING_NOISE, seed: int = 0):
    """The crude 'ceiling' model: per-class mean training image plus Gaussian noise."""
    x, y = get_dataset(name, "train")
    c = len(get_spec(name).class_names)
    means = torch.stack([x[y == i].mean(0) for i in range(c)])
    labels = torch.arange(n) % c
    gen = torch.Generator().manual_seed(seed)
    images = means[labels] + noise * torch.randn((n, *means.shape[1:]), generator=gen)
    return images.clamp(0, 1), labels


def reference_scores(name: str, n: int, seed: int = 0) -> dict:
    """Floor (real half vs the other real half) and ceiling (class means + noise) at size n.

    Both are scored against the same reference: the first half of a real pool of 2n.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise VarcompressError(f"n must be an integer >= 4, got {n!r}")
    x, y = real_pool(name, 2 * n, seed)
    evaluator = TestbedEvaluator(name, reference=x[:n])
    return {
        "n": n,
        "floor": evaluator.evaluate(x[n:], y[n:]),
        "ceiling": evaluator.evaluate(*class_mean_generator(name, n, seed=seed)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m varcompress.metrics.testbed",
                                description="print floor and ceiling scores of a testbed set as JSON")
    p.add_argument("name")
    p.add_argument("--n", type=int, default=800)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        print(json.dumps({"dataset": args.name, **reference_scores(args.name, args.n, args.seed)}, indent=1))
    except VarcompressError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
