"""The 64x64 `scenes` set: a class is (texture, colour family), and both are really in the pixels."""
from __future__ import annotations

import torch

from varcompress.testbed import get_dataset
from varcompress.testbed.scenes import CLASS_NAMES, FAMILIES, TEXTURES, render_scenes


def _object_pixels(x: torch.Tensor) -> torch.Tensor:
    """Saturated pixels (the objects; backgrounds are desaturated): a (N,3,H,W) mask."""
    mx, mn = x.max(1).values, x.min(1).values
    return ((mx - mn) / (mx + 1e-6) > 0.6) & (mx > 0.5)


def _hue(rgb: torch.Tensor) -> torch.Tensor:
    """Hue in turns [0,1) of (..., 3) colours."""
    r, g, b = rgb.unbind(-1)
    mx, mn = rgb.max(-1).values, rgb.min(-1).values
    d = (mx - mn).clamp_min(1e-6)
    h = torch.where(mx == r, ((g - b) / d) % 6, torch.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return h / 6


def test_depends_only_on_seed_and_index_and_splits_differ():
    x, y = get_dataset("scenes", n=30, seed=5)
    xs, ys = render_scenes([29, 3, 11], seed=5)
    assert torch.equal(xs, x[[29, 3, 11]]) and torch.equal(ys, y[[29, 3, 11]])
    big, _ = get_dataset("scenes", n=1030, seed=5)          # across render chunks (512)
    assert torch.equal(render_scenes([1029, 512, 511], seed=5)[0], big[[1029, 512, 511]])
    xt, _ = get_dataset("scenes", "test", n=30, seed=5)
    assert (xt - x).abs().amax(dim=(1, 2, 3)).min() > 0.05
    xs0, _ = get_dataset("shapes", n=2, seed=5)             # not the shapes stream under another name
    assert x.shape[-1] == 64 and xs0.shape[-1] == 32


def test_classes_are_colour_family_times_texture_and_balanced():
    assert len(CLASS_NAMES) == len(FAMILIES) * len(TEXTURES) == 10
    x, y = get_dataset("scenes", n=200, seed=1)
    assert torch.equal(torch.bincount(y), torch.full((10,), 20))
    obj = _object_pixels(x)
    assert obj.sum(dim=(1, 2)).min() >= 8                    # every scene has a visible object
    for c in range(10):
        sel = y == c
        rgb = x[sel].permute(0, 2, 3, 1)[obj[sel]]
        hue = _hue(rgb)
        warm = (hue < 0.16) | (hue > 0.92)
        cool = (hue > 0.48) & (hue < 0.70)
        expected = warm if CLASS_NAMES[c].startswith("warm") else cool
        assert expected.float().mean() > 0.95, CLASS_NAMES[c]


def _detail_energy(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Fraction of sharp steps (> 0.15, above the grain) between neighbouring pixels along one axis."""
    return (x.diff(dim=axis).abs() > 0.15).float().mean(dim=(1, 2, 3))


def _steps_inside_objects(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Fraction of neighbouring object-pixel pairs along one axis with a sharp step (> 0.15)."""
    obj = _object_pixels(x)
    n = obj.shape[axis - 1]
    pair = obj.narrow(axis - 1, 0, n - 1) & obj.narrow(axis - 1, 1, n - 1)
    step = (x.diff(dim=axis).abs() > 0.15).any(1)
    return (step & pair).float().sum(dim=(1, 2)) / pair.float().sum(dim=(1, 2)).clamp_min(1)


def test_textures_carry_fine_detail_in_their_direction():
    x, y = get_dataset("scenes", n=300, seed=2)
    tex = y % len(TEXTURES)
    along_h, along_w = _detail_energy(x, 2), _detail_energy(x, 3)    # across rows, across columns
    hstripes, vstripes, plain = tex == 0, tex == 1, tex == 4
    assert along_h[hstripes].mean() > 1.4 * along_w[hstripes].mean()  # horizontal stripes change down rows
    assert along_w[vstripes].mean() > 1.4 * along_h[vstripes].mean()
    inside = _steps_inside_objects(x, 2) + _steps_inside_objects(x, 3)
    for t in (0, 1, 2, 3):                                         # plain objects: only outline pixels step
        assert inside[tex == t].mean() > 1.6 * inside[plain].mean(), TEXTURES[t]
