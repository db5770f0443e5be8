"""Procedural 10-class 'scenes' at 64x64 RGB: colour and fine texture define the class.

A scene is a soft two-colour background gradient with one to three outlined objects
(circle, square, triangle or diamond, possibly overlapping). Every object of a scene
carries the class's texture (horizontal stripes, vertical stripes, checks, dots, or
plain) in two shades of one hue drawn from the class's colour family (warm: red to
yellow; cool: cyan to blue). So a class is (texture, colour family): greying an image
removes half of what defines it, blurring removes the other half, and a colour-channel
shuffle turns warm into cool. Stripe and dot periods are 6-10 px, so at the official
geometry (16x16 tokens at 4x) they live in the last scales; check cells are 6-10 px (period
12-20 px), resolvable from the 10x10 scale on: with 3-5 px cells the teacher's last scale,
sampled token by token, could not keep the checker's phase (docs/TESTBED.md, "scenes").

As in `shapes`, every draw comes from a counter-based hash of (seed, split, index, draw):
the set is unlimited, each image depends only on its own index, and label = index % 10.
"""
from __future__ import annotations

import numpy as np
import torch

from .shapes import _uniform, render_indexed

TEXTURES = ("hstripes", "vstripes", "checks", "dots", "plain")
FAMILIES = ("warm", "cool")
CLASS_NAMES = tuple(f"{f}_{t}" for f in FAMILIES for t in TEXTURES)
SIZE = 64
MAX_OBJECTS = 3
_SPLIT_KEYS = {"train": 0, "test": 1}
_HUE_RANGES = {"warm": (-0.06, 0.14), "cool": (0.50, 0.68)}   # hue in turns: red..yellow, cyan..blue


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB; inputs of one shape, output with a trailing axis of 3."""
    h = np.mod(h, 1.0)
    k = np.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], axis=-1)
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def _object_sdf(kind: np.ndarray, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance (px, negative inside) of circle/square/triangle/diamond of size r."""
    circle = np.hypot(u, v) - r
    square = np.maximum(abs(u), abs(v)) - 0.8 * r
    triangle = np.maximum(v - 0.6 * r, np.maximum(0.866 * u - 0.5 * v, -0.866 * u - 0.5 * v) - 0.6 * r)
    diamond = (abs(u) + abs(v) - 1.05 * r) * 0.7071
    return np.select([kind == 0, kind == 1, kind == 2], [circle, square, triangle], diamond)


def _texture(tex: int, x: np.ndarray, y: np.ndarray, period: np.ndarray, phase_x: np.ndarray,
             phase_y: np.ndarray) -> np.ndarray:
    """Fraction of the main shade at each pixel (anti-aliased), for one texture kind."""
    if tex == 4:                                             # plain
        return np.ones_like(x)
    px, py = x / period + phase_x, y / period + phase_y
    if tex in (0, 1):                                        # stripes, half duty
        t = py if tex == 0 else px
        d = (abs(t - np.floor(t) - 0.5) - 0.25) * period
        return np.clip(0.5 - d, 0.0, 1.0)
    if tex == 2:                                             # checks: cell = period (docs/TESTBED.md)
        fx = abs(px - np.floor(px + 0.5)) * period
        fy = abs(py - np.floor(py + 0.5)) * period
        parity = (np.floor(px) + np.floor(py)) % 2
        d = np.where(parity == 0, -1.0, 1.0) * np.minimum(fx, fy)
        return np.clip(0.5 - d, 0.0, 1.0)
    # dots on a square grid, radius ~0.24 of the period
    dx = (px - np.floor(px) - 0.5) * period
    dy = (py - np.floor(py) - 0.5) * period
    return np.clip(0.5 - (np.hypot(dx, dy) - 0.24 * period), 0.0, 1.0)


def _render_chunk(idx: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Render images for indices `idx` (keys `key`): (m,3,64,64) float32 in [0,1]."""
    m = len(idx)
    labels = idx % 10
    family, tex = labels // len(TEXTURES), labels % len(TEXTURES)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    # background: a linear gradient between two desaturated colours, at a random angle
    ang = 2 * np.pi * _uniform(key, 0)
    g = ((xs[None] - 31.5) * np.cos(ang)[:, None, None] + (ys[None] - 31.5) * np.sin(ang)[:, None, None]) / 45 + 0.5
    g = np.clip(g, 0, 1)[..., None]
    bg_a = _hsv_to_rgb(_uniform(key, 1), 0.25 * _uniform(key, 2), 0.3 + 0.55 * _uniform(key, 3))
    bg_b = _hsv_to_rgb(_uniform(key, 4), 0.25 * _uniform(key, 5), 0.3 + 0.55 * _uniform(key, 6))
    img = bg_a[:, None, None] * (1 - g) + bg_b[:, None, None] * g          # (m,64,64,3)
    lo = np.array([_HUE_RANGES[f][0] for f in FAMILIES])[family]
    hi = np.array([_HUE_RANGES[f][1] for f in FAMILIES])[family]
    n_obj = 1 + (_uniform(key, 7) * MAX_OBJECTS).astype(np.int64)
    for o in range(MAX_OBJECTS):
        U = [_uniform(key, 16 + 16 * o + d) for d in range(12)]
        present = (o < n_obj)[:, None, None]
        r = 9.0 + 7.0 * U[0]
        cx, cy = r + (SIZE - 1 - 2 * r) * U[1], r + (SIZE - 1 - 2 * r) * U[2]
        kind = (U[3] * 4).astype(np.int64)
        theta = np.deg2rad(-15 + 30 * U[4])
        x, y = xs[None] - cx[:, None, None], ys[None] - cy[:, None, None]
        c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
        u, v = c * x + s * y, -s * x + c * y
        sd = _object_sdf(kind[:, None, None], u, v, r[:, None, None])
        period = (6.0 + 4.0 * U[5])[:, None, None]
        t = np.empty_like(sd)
        for k in range(len(TEXTURES)):
            sel = tex == k
            if sel.any():  # textures live in image coordinates: stripes stay horizontal/vertical
                t[sel] = _texture(k, xs[None], ys[None], period[sel], U[6][sel, None, None], U[7][sel, None, None])
        hue = lo + (hi - lo) * U[8]
        main = _hsv_to_rgb(hue, 0.75 + 0.25 * U[9], 0.8 + 0.2 * U[10])
        shade = _hsv_to_rgb(hue, 0.75 + 0.25 * U[9], 0.25 + 0.15 * U[11])
        fill = shade[:, None, None] + (main - shade)[:, None, None] * t[..., None]
        fill = np.where((tex == 4)[:, None, None, None], main[:, None, None], fill)
        inside = np.clip(0.5 - sd, 0.0, 1.0)[..., None] * present[..., None]
        img = img * (1 - inside) + fill * inside
        outline = np.clip(1.2 - abs(sd + 0.6), 0.0, 1.0)[..., None] * present[..., None]   # ~1.5 px dark edge
        img = img * (1 - outline) + 0.06 * outline
    grain = (_uniform(key, 12, (SIZE, SIZE)) * 2 - 1)[..., None] * (0.02 * _uniform(key, 13))[:, None, None, None]
    return np.clip(img + grain, 0.0, 1.0).transpose(0, 3, 1, 2).astype(np.float32)


def render_scenes(indices, seed: int = 0, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels for the given indices: ((B,3,64,64) float32 in [0,1], (B,) int64).
    Streams 2 and 3 (train, test): never the shapes set's 0 and 1."""
    return render_indexed(_render_chunk, indices, seed, 2 + _SPLIT_KEYS[split], SIZE, 512, "scene")


def make_scenes(n: int, seed: int = 0, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` images of the (seed, split) stream."""
    return render_scenes(np.arange(n), seed=seed, split=split)
