"""The built-in testbed data: determinism, format, balance, labels, and input errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varcompress.errors import VarcompressError
from varcompress.testbed import DATASETS, dataset_info, get_dataset
from varcompress.testbed import digits as digits_mod
from varcompress.testbed.shapes import CLASS_NAMES, render_shapes


def _check_format(x, y, n, size=32):
    assert x.shape == (n, 3, size, size) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert x.min() >= 0 and x.max() <= 1
    assert y.min() >= 0 and y.max() <= 9


@pytest.mark.parametrize("name", ["shapes", "digits", "scenes"])
def test_format_and_determinism(name):
    x1, y1 = get_dataset(name, "train", n=60, seed=3)
    x2, y2 = get_dataset(name, "train", n=60, seed=3)
    _check_format(x1, y1, 60, dataset_info(name)["image_size"])
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = get_dataset(name, "train", n=60, seed=4)
    assert not torch.equal(x1, x3)


def test_shapes_depend_only_on_seed_and_index():
    x, y = get_dataset("shapes", n=40, seed=7)
    xs, ys = render_shapes([33, 5, 12], seed=7)
    assert torch.equal(xs, x[[33, 5, 12]]) and torch.equal(ys, y[[33, 5, 12]])
    big, _ = get_dataset("shapes", n=4101, seed=7)            # across render chunks (2048)
    assert torch.equal(render_shapes([4100, 2048, 2047], seed=7)[0], big[[4100, 2048, 2047]])
    xt, _ = get_dataset("shapes", "test", n=40, seed=7)
    assert (xt - x).abs().amax(dim=(1, 2, 3)).min() > 0.05  # train and test streams differ


def test_shapes_balanced_varied_and_contrasted():
    x, y = get_dataset("shapes", n=500)
    assert torch.equal(torch.bincount(y), torch.full((10,), 50))
    assert len(CLASS_NAMES) == 10
    spread = x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))
    assert spread.min() > 0.2                               # a visible foreground in every image
    per_image = x.flatten(1)
    assert torch.cdist(per_image[:50], per_image[:50]).fill_diagonal_(1e9).min() > 1.0  # no duplicates


def test_shapes_classes_have_their_geometry():
    """Horizontal stripes change along rows, vertical along columns; a ring's centre is bg."""
    x, y = get_dataset("shapes", n=400)
    g = x.mean(1)
    dv = (g[:, 1:] - g[:, :-1]).abs().mean(dim=(1, 2))
    dh = (g[:, :, 1:] - g[:, :, :-1]).abs().mean(dim=(1, 2))
    h, v = CLASS_NAMES.index("hstripes"), CLASS_NAMES.index("vstripes")
    assert (dv[y == h] > 2 * dh[y == h]).all()
    assert (dh[y == v] > 2 * dv[y == v]).all()
    ring, circle = CLASS_NAMES.index("ring"), CLASS_NAMES.index("circle")
    smooth = F.avg_pool2d(g[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]  # damp grain
    for cls, centre_is_bg in ((ring, True), (circle, False)):
        for i in (y == cls).nonzero().flatten().tolist():
            fg = (smooth[i] - smooth[i, 0, 0]).abs() > 0.1     # corners are always background
            ys, xs = fg.nonzero(as_tuple=True)                 # centroid of the shape = its centre
            cy, cx = ys.float().mean().round().long(), xs.float().mean().round().long()
            assert bool(fg[cy, cx]) != centre_is_bg


def test_render_speed():
    import time

    t = time.perf_counter()
    get_dataset("shapes", n=2000)
    assert time.perf_counter() - t < 10.0                   # ~0.3 s on an idle core


def test_digits_splits():
    tr_x, tr_y = get_dataset("digits", "train")
    te_x, te_y = get_dataset("digits", "test")
    _check_format(tr_x, tr_y, 1437)
    _check_format(te_x, te_y, 360)
    assert torch.equal(tr_x[:, 0], tr_x[:, 1]) and torch.equal(tr_x[:, 0], tr_x[:, 2])  # grey as RGB
    idx = digits_mod._split_indices()
    assert not set(idx["train"]) & set(idx["test"])
    assert len(set(idx["train"]) | set(idx["test"])) == 1797
    full = torch.bincount(torch.cat([tr_y, te_y]))
    assert ((torch.bincount(te_y) - 0.2 * full).abs() <= 1).all()  # stratified 80/20


def test_digits_label_is_the_digit():
    """Each image, pooled back to 8x8, is nearest to an original sklearn image of its label."""
    from sklearn.datasets import load_digits

    d = load_digits()
    orig = torch.from_numpy(d.images.reshape(len(d.images), -1).astype(np.float32) / 16)
    x, y = get_dataset("digits", "test")
    pooled = F.avg_pool2d(x[:, :1], 4).flatten(1)
    nearest = torch.cdist(pooled, orig).argmin(1)
    assert (torch.from_numpy(d.target)[nearest] == y).float().mean() == 1.0


def test_digits_seed_shuffles_and_n_limits():
    a, ya = get_dataset("digits", "test", seed=0)
    b, yb = get_dataset("digits", "test", seed=1)
    assert not torch.equal(ya, yb) and torch.equal(torch.bincount(ya), torch.bincount(yb))
    x, y = get_dataset("digits", "test", n=10, seed=1)
    assert torch.equal(x, b[:10])


@pytest.mark.parametrize("kwargs, words", [
    (dict(name="mnist"), ["mnist", "digits", "shapes"]),
    (dict(name="shapes", split="val"), ["val", "train", "test"]),
    (dict(name="digits", n=5000), ["1437", "5000"]),
    (dict(name="shapes", n=0), ["n"]),
    (dict(name="shapes", n=2.5), ["n"]),
    (dict(name="shapes", seed="a"), ["seed"]),
])
def test_bad_requests_raise_one_line(kwargs, words):
    with pytest.raises(VarcompressError) as e:
        get_dataset(**kwargs)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words)


def test_dataset_info():
    assert set(DATASETS) == {"shapes", "digits", "scenes"}
    for name in DATASETS:
        info = dataset_info(name)
        assert info["num_classes"] == 10 == len(info["class_names"])
        if name == "scenes":  # the official token geometry: 16x16 tokens at 4x
            assert info["image_size"] == 64 and info["patch_nums"] == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
        else:
            assert info["image_size"] == 32 and info["patch_nums"] == (1, 2, 3, 4, 5, 6, 8)
    assert dataset_info("digits")["class_names"] == [str(i) for i in range(10)]
    with pytest.raises(VarcompressError, match="valid names"):
        dataset_info("cifar")
