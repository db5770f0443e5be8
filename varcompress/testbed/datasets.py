"""Registry of the built-in testbed data sets and the one function to load them.

`get_dataset(name, split, n, seed)` is the only entry point the rest of the project
needs: it validates the request, and returns images (B,3,S,S) float32 in [0,1]
(S = the set's `image_size`: 32, or 64 for `scenes`) and labels (B,) int64, always
the same for the same arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import operator

import torch

from ..errors import VarcompressError
from . import digits, scenes, shapes

SPLITS = ("train", "test")
PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8)  # the 32x32 sets' VAR scales: last = 8x8 tokens of a 32x32 image at 4x
OFFICIAL_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # scenes: the official geometry, 16x16 tokens at 4x


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set is; `load(split, n, seed)` produces it; sizes None mean unlimited."""

    name: str
    description: str
    class_names: tuple[str, ...]
    load: Callable[[str, int, int], tuple[torch.Tensor, torch.Tensor]]
    split_sizes: dict = field(default_factory=dict)    # split -> size, or None (unlimited)
    default_sizes: dict = field(default_factory=dict)  # split -> n used when n is None
    image_size: int = 32
    patch_nums: tuple[int, ...] = PATCH_NUMS


def _load_scenes(split: str, n: int, seed: int):
    return scenes.make_scenes(n, seed=seed, split=split)


def _load_shapes(split: str, n: int, seed: int):
    return shapes.make_shapes(n, seed=seed, split=split)


def _load_digits(split: str, n: int, seed: int):
    """A seeded shuffle of the fixed split, first n kept (so n=None and n=size agree)."""
    x, y = digits.load_digits_split(split)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return x[perm], y[perm]


DATASETS: dict[str, DatasetSpec] = {
    "scenes": DatasetSpec(
        name="scenes",
        description="procedural 64x64 colour scenes: 1-3 outlined objects, class = texture x colour family; "
                    "unlimited",
        class_names=scenes.CLASS_NAMES,
        load=_load_scenes,
        split_sizes={"train": None, "test": None},
        default_sizes={"train": 10000, "test": 2000},
        image_size=scenes.SIZE,
        patch_nums=OFFICIAL_PATCH_NUMS,
    ),
    "shapes": DatasetSpec(
        name="shapes",
        description="procedural shapes and patterns, random colours/sizes/positions; unlimited",
        class_names=shapes.CLASS_NAMES,
        load=_load_shapes,
        split_sizes={"train": None, "test": None},
        default_sizes={"train": 10000, "test": 2000},
    ),
    "digits": DatasetSpec(
        name="digits",
        description="scikit-learn 8x8 handwritten digits, bicubic to 32x32, grey as RGB",
        class_names=digits.CLASS_NAMES,
        load=_load_digits,
        split_sizes={"train": 1437, "test": 360},
        default_sizes={"train": 1437, "test": 360},
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry, or a one-line error naming the valid choices."""
    if name not in DATASETS:
        raise VarcompressError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def get_dataset(name: str, split: str = "train", n: Optional[int] = None, seed: int = 0):
    """Images (B,3,S,S) float32 in [0,1] and labels (B,) int64 of a built-in set.

    `n=None` gives the split's default size. For `shapes` and `scenes`, `seed` picks the image
    stream (unlimited; train and test streams never share images). For `digits`,
    `seed` shuffles the fixed split and the first `n` images are returned.
    """
    spec = get_spec(name)
    if split not in SPLITS:
        raise VarcompressError(f"unknown split {split!r} for {name}; valid splits: {', '.join(SPLITS)}")
    n = spec.default_sizes[split] if n is None else _as_int(n, "n")
    if n < 1:
        raise VarcompressError(f"n must be a positive integer, got {n}")
    limit = spec.split_sizes[split]
    if limit is not None and n > limit:
        raise VarcompressError(f"{name} {split} split has only {limit} images, asked for {n}")
    return spec.load(split, n, _as_int(seed, "seed"))


def at_most_split(name: str, split: str, n: int) -> int:
    """`n`, or the split's size when that is smaller (unlimited sets: always `n`)."""
    limit = get_spec(name).split_sizes[split]
    return n if limit is None else min(n, limit)


def _as_int(value, what: str) -> int:
    """Accept Python/numpy/torch integers, refuse bools, floats and strings."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise VarcompressError(f"{what} must be an integer, got {value!r}") from None


def dataset_info(name: str) -> dict:
    """Facts a model or recipe needs: classes, image size, split sizes, VAR patch_nums."""
    spec = get_spec(name)
    return {
        "name": spec.name,
        "description": spec.description,
        "num_classes": len(spec.class_names),
        "class_names": list(spec.class_names),
        "image_size": spec.image_size,
        "channels": 3,
        "split_sizes": dict(spec.split_sizes),
        "default_sizes": dict(spec.default_sizes),
        "patch_nums": spec.patch_nums,
    }
