"""The ImageNet FID/IS wiring, offline: a stand-in feature extractor replaces InceptionV3."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from varcompress import VarcompressError
from varcompress.metrics.frechet import feature_stats
from varcompress.metrics.imagenet_fid import (imagenet_fid, inception_score, to_uint8_nhwc,
                                              write_samples_npz)


class FakeInception(torch.nn.Module):
    """Deterministic 'features': per-channel means and stds; logits from a fixed projection."""

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        f = x.float() / 255
        pool = torch.cat([f.mean((2, 3)), f.std((2, 3)), f[:, :, ::4, ::4].flatten(1)[:, :10]], 1)
        logits = pool @ torch.linspace(-3, 3, pool.shape[1] * 5).view(pool.shape[1], 5)
        return pool, logits


def test_npz_round_trip_is_the_evaluator_format(tmp_path):
    imgs = torch.rand(6, 3, 8, 8)
    arr = to_uint8_nhwc(imgs)
    assert arr.dtype == np.uint8 and arr.shape == (6, 8, 8, 3)
    path = write_samples_npz(arr, tmp_path / "s.npz", labels=[0, 1, 2, 3, 4, 5])
    loaded = np.load(path)
    assert np.array_equal(loaded["arr_0"], arr) and loaded["arr_1"].tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(VarcompressError, match="exists"):
        write_samples_npz(arr, path)


def test_fid_of_samples_against_their_own_statistics_is_zero(tmp_path):
    arr = to_uint8_nhwc(torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    write_samples_npz(arr, tmp_path / "s.npz")
    pool, _ = FakeInception()(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous())
    mu, sigma = feature_stats(pool.double())
    np.savez(tmp_path / "ref.npz", mu=mu, sigma=sigma)
    r = imagenet_fid(tmp_path / "s.npz", tmp_path / "ref.npz", "unused", extractor=FakeInception())
    assert abs(r["fid"]) < 1e-6 and r["n"] == 64
    other = to_uint8_nhwc(torch.rand(64, 3, 8, 8) * 0.5)
    np.savez(tmp_path / "ref2.npz", arr_0=other)
    assert imagenet_fid(tmp_path / "s.npz", tmp_path / "ref2.npz", "unused", extractor=FakeInception())["fid"] > 1


def test_inception_score_closed_form():
    confident = torch.eye(10) * 50  # each image certain of a different class: IS = number of classes
    assert math.isclose(inception_score(confident, splits=1)[0], 10, rel_tol=1e-6)
    assert math.isclose(inception_score(torch.zeros(10, 10), splits=1)[0], 1.0, rel_tol=1e-9)


def test_missing_weights_or_bad_npz_are_clear_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", arr_0=np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(VarcompressError, match="uint8"):
        imagenet_fid(tmp_path / "bad.npz", tmp_path / "ref.npz", tmp_path / "none.pth")
    arr = np.zeros((2, 8, 8, 3), np.uint8)
    np.savez(tmp_path / "ok.npz", arr_0=arr)
    with pytest.raises(VarcompressError, match="Inception weights not found"):
        imagenet_fid(tmp_path / "ok.npz", tmp_path / "ref.npz", tmp_path / "none.pth")
