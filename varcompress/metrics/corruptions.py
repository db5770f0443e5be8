"""How forgiving a testbed classifier is: its accuracy on real images with content removed.

A classifier that still recognises grey, blurred or colour-shuffled images would score
a generator that loses colour or detail as if it had not: `corruption_accuracy` measures
that, so each set's card can say what its accuracy numbers can and cannot see.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..testbed.datasets import at_most_split, get_dataset
from .classifier import accuracy, load_classifier


def grey(x: torch.Tensor) -> torch.Tensor:
    """Luma (BT.601) copied to all three channels: colour removed, detail kept."""
    y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    return y[:, None].expand_as(x).contiguous()


def blur(x: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Separable Gaussian blur (reflect padding): fine detail removed, colour kept."""
    r = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def channel_shuffle(x: torch.Tensor) -> torch.Tensor:
    """RGB -> BRG: every hue moves by a third of the circle; luminance structure kept."""
    return x[:, [2, 0, 1]]


CORRUPTIONS = {"grey": grey, "blur_sigma1.5": blur, "blur_sigma3": lambda x: blur(x, 3.0),
               "channels_brg": channel_shuffle}


def corruption_accuracy(name: str, n: int = 2000, seed: int = 0) -> dict:
    """Classifier accuracy on `n` real test images (at most the split), clean and under each corruption."""
    model = load_classifier(name)
    x, y = get_dataset(name, "test", n=at_most_split(name, "test", n), seed=seed)
    out = {"clean": accuracy(model, x, y)}
    for label, fn in CORRUPTIONS.items():
        out[label] = accuracy(model, fn(x).clamp(0, 1), y)
    return {k: round(v, 4) for k, v in out.items()}
