"""Procedural 10-class 'shapes' images at 32x32 RGB, rendered vectorised with numpy.

Every random draw comes from a counter-based hash of (seed, split, index, draw), so an
image depends only on its own index: the set is unlimited, any slice can be rendered
on its own, and the same (seed, index) always gives the same pixels. Shapes are drawn
from approximate signed distances with a one-pixel anti-aliased edge. The label is
`index % 10`, so any run of 10 consecutive indices is exactly class-balanced.
"""
from __future__ import annotations

import numpy as np
import torch

CLASS_NAMES = ("circle", "square", "triangle", "ring", "plus", "diamond",
               "hstripes", "vstripes", "checkerboard", "two_dots")
SIZE = 32
_SPLIT_KEYS = {"train": 0, "test": 1}
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a good 64-bit hash, vectorised (uint64 arithmetic wraps)."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return x ^ (x >> np.uint64(31))


def _uniform(key: np.ndarray, draw: int, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    """Uniform [0,1) numbers, one per key (and per trailing position), fixed by (key, draw)."""
    k = key.reshape(key.shape + (1,) * len(shape_tail))
    pos = np.arange(int(np.prod(shape_tail)) if shape_tail else 1, dtype=np.uint64).reshape(shape_tail or ())
    h = _mix(_mix(k ^ np.uint64(draw * 0x632BE59BD9B4E019 & 0xFFFFFFFFFFFFFFFF)) + pos)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _sdf(cls: int, u: np.ndarray, v: np.ndarray, r: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Approximate signed distance (pixels, negative inside) of class `cls` in local coords.

    u, v: (m, 32, 32) rotated coordinates; r: (m,1,1) size; a, b: (m,1,1) extra uniforms.
    """
    d = np.hypot(u, v)
    if cls == 0:   # circle
        return d - r
    if cls == 1:   # square, rotation kept within +-12 deg so it never looks like a diamond
        return np.maximum(abs(u), abs(v)) - 0.82 * r
    if cls == 2:   # equilateral triangle, apex up, circumradius r
        e = np.maximum(v, np.maximum(0.866 * u - 0.5 * v, -0.866 * u - 0.5 * v))
        return e - 0.5 * r
    if cls == 3:   # ring (annulus): visible hole in the middle
        return abs(d - 0.72 * r) - (0.16 + 0.08 * a) * r
    if cls == 4:   # plus '+'
        w = (0.18 + 0.1 * a) * r
        return np.minimum(np.maximum(abs(u) - w, abs(v) - r), np.maximum(abs(v) - w, abs(u) - r))
    if cls == 5:   # diamond: the |u|+|v| ball is a square at 45 deg (+-12 from rotation)
        return (abs(u) + abs(v) - 1.1 * r) * 0.7071
    if cls in (6, 7):  # stripes over the whole image; period 5-10 px, duty 35-65%
        period, duty = 5 + 5 * a, 0.35 + 0.3 * b
        t = (v if cls == 6 else u) / period + r  # r reused as a random phase
        return (abs(t - np.floor(t) - 0.5) - duty / 2) * period
    if cls == 8:   # checkerboard, cell 5-9 px
        cell = 5 + 4 * a
        su, sv = u / cell + b, v / cell + r
        fu = abs(su - np.floor(su + 0.5)) * cell
        fv = abs(sv - np.floor(sv + 0.5)) * cell
        parity = (np.floor(su) + np.floor(sv)) % 2
        return np.where(parity == 0, -1.0, 1.0) * np.minimum(fu, fv)
    if cls == 9:   # two dots along a random direction (the pair may point anywhere)
        ang = 2 * np.pi * a
        du, dv = 0.62 * r * np.cos(ang), 0.62 * r * np.sin(ang)
        rad = 0.34 * r
        return np.minimum(np.hypot(u - du, v - dv), np.hypot(u + du, v + dv)) - rad
    raise ValueError(cls)


def _render_chunk(idx: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Render images for indices `idx` (keys `key`): (m,3,32,32) float32 in [0,1]."""
    m = len(idx)
    labels = idx % 10
    U = [_uniform(key, d)[:, None, None] for d in range(8)]
    r = 6.0 + 6.0 * U[0]                                   # size: 6-12 px
    ext = 1.15 * r
    cx = ext + (SIZE - 1 - 2 * ext) * U[1]
    cy = ext + (SIZE - 1 - 2 * ext) * U[2]
    lab = labels[:, None, None]
    free_rot = np.isin(lab, (0, 3, 9))                      # rotation-invariant or free
    theta = np.where(free_rot, 0.0, np.deg2rad(-12 + 24 * U[3]))
    pattern = np.isin(lab, (6, 7, 8))                       # patterns rotate about the image centre
    cx = np.where(pattern, 15.5, cx)
    cy = np.where(pattern, 15.5, cy)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    x, y = xs[None] - cx, ys[None] - cy
    c, s = np.cos(theta), np.sin(theta)
    u, v = c * x + s * y, -s * x + c * y
    sd = np.empty((m, SIZE, SIZE))
    phase = U[0]                                            # patterns: size draw becomes phase
    for k in range(10):
        sel = labels == k
        if sel.any():
            rr = np.where(pattern[sel], phase[sel], r[sel])
            sd[sel] = _sdf(k, u[sel], v[sel], rr, U[4][sel], U[5][sel])
    mask = np.clip(0.5 - sd, 0.0, 1.0)[:, None]             # 1-px anti-aliased edge
    dark = 0.4 * _uniform(key, 8, (3,))                     # contrast: every channel differs
    light = 0.6 + 0.4 * _uniform(key, 9, (3,))              # by at least 0.2
    fg_light = (_uniform(key, 10) < 0.5)[:, None]
    fg = np.where(fg_light, light, dark)[:, :, None, None]
    bg = np.where(fg_light, dark, light)[:, :, None, None]
    img = bg + (fg - bg) * mask
    amp = 0.08 * _uniform(key, 11)[:, None, None, None]     # mild grey grain texture
    grain = _uniform(key, 12, (SIZE, SIZE))[:, None] * 2 - 1
    return np.clip(img + amp * grain, 0.0, 1.0).astype(np.float32)


def render_indexed(render_chunk, indices, seed: int, stream: int, size: int, chunk: int, what: str):
    """Images and labels (index % 10) by index: each image's draws are keyed by (seed, stream, index),
    so any slice renders on its own; chunks keep memory small. Shared by the procedural sets."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and idx.min() < 0:
        raise ValueError(f"{what} indices must be non-negative")
    base = _mix(np.array([seed & 0xFFFFFFFF], dtype=np.uint64) * np.uint64(4) + np.uint64(stream))
    keys = _mix(base ^ idx.astype(np.uint64))
    out = np.empty((idx.size, 3, size, size), dtype=np.float32)
    for start in range(0, idx.size, chunk):
        out[start:start + chunk] = render_chunk(idx[start:start + chunk], keys[start:start + chunk])
    return torch.from_numpy(out), torch.from_numpy(idx % 10)


def render_shapes(indices, seed: int = 0, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels for the given indices: ((B,3,32,32) float32 in [0,1], (B,) int64)."""
    return render_indexed(_render_chunk, indices, seed, _SPLIT_KEYS[split], SIZE, 2048, "shape")


def make_shapes(n: int, seed: int = 0, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` images of the (seed, split) stream."""
    return render_shapes(np.arange(n), seed=seed, split=split)
