"""Frechet distance, precision/recall, the shipped classifiers and the testbed evaluator."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from varcompress.errors import VarcompressError
from varcompress.metrics import classifier as clf
from varcompress.metrics.corruptions import corruption_accuracy
from varcompress.metrics.frechet import feature_stats, frechet_distance
from varcompress.metrics.precision_recall import knn_radii, precision_recall
from varcompress.metrics.testbed import TestbedEvaluator, reference_scores
from varcompress.testbed import get_dataset

THRESHOLDS = {"shapes": 0.98, "digits": 0.97, "scenes": 0.98}


def _random_cov(rng, d, n=None):
    a = rng.normal(size=(n or 2 * d, d))
    return a.T @ a / (n or 2 * d)


def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_1d():
    # N(1, 2^2) vs N(4, 5^2): (1-4)^2 + (2-5)^2 = 18
    assert frechet_distance([1.0], [[4.0]], [4.0], [[25.0]]) == pytest.approx(18.0, rel=1e-12)
    assert frechet_distance(np.array(1.0), np.array(4.0), np.array(4.0), np.array(25.0)) == pytest.approx(18.0)


def test_frechet_zero_symmetric_and_matches_sqrtm():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(1)
    s1, s2 = _random_cov(rng, 20), _random_cov(rng, 20)
    m1, m2 = rng.normal(size=20), rng.normal(size=20)
    assert frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-9)
    d12, d21 = frechet_distance(m1, s1, m2, s2), frechet_distance(m2, s2, m1, s1)
    assert d12 == pytest.approx(d21, rel=1e-9)
    ref = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(sqrtm(s1 @ s2).real)
    assert d12 == pytest.approx(ref, rel=1e-8)
    # rank-deficient covariances (fewer samples than dims) stay finite and >= 0
    d = frechet_distance(m1, _random_cov(rng, 20, n=5), m2, _random_cov(rng, 20, n=5))
    assert np.isfinite(d) and d >= 0
    assert frechet_distance(torch.tensor(m1), torch.tensor(s1), m2, s2) == pytest.approx(d12)


def test_feature_stats_and_errors():
    f = np.random.default_rng(2).normal(size=(50, 4))
    mu, sigma = feature_stats(f)
    assert np.allclose(mu, f.mean(0)) and np.allclose(sigma, np.cov(f.T))
    with pytest.raises(VarcompressError):
        feature_stats(f[:1])
    with pytest.raises(VarcompressError, match="shape mismatch"):
        frechet_distance(mu, sigma, mu[:3], sigma)


def test_knn_radii_brute_force():
    f = torch.randn(60, 5, dtype=torch.float64)
    d = torch.cdist(f, f) + torch.eye(60) * 1e9
    assert torch.allclose(knn_radii(f, k=3, chunk=7), d.sort(1).values[:, 2])


def test_precision_recall_identical_disjoint_and_half():
    real = torch.randn(300, 16)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    fake = torch.cat([real[:150], real[150:] + 100.0])       # half on the real manifold
    p, r = precision_recall(real, fake, chunk=64)
    assert p == 0.5 and 0.5 <= r < 1.0
    with pytest.raises(VarcompressError):
        precision_recall(real, torch.randn(10, 8))


@pytest.mark.parametrize("name", ["shapes", "digits", "scenes"])
def test_shipped_classifier_accuracy(name):
    model = clf.load_classifier(name)
    x, y = get_dataset(name, "test")
    acc = clf.accuracy(model, x, y)
    assert acc >= THRESHOLDS[name]
    assert clf.classifier_info(name)["test_accuracy"] == pytest.approx(acc, abs=2e-3)
    assert (clf.ASSETS / f"classifier_{name}.safetensors").stat().st_size < 2_500_000
    # a generator whose images ignore the requested label scores near chance
    wrong = torch.randint(0, 10, y.shape, generator=torch.Generator().manual_seed(0))
    assert 0.04 <= clf.accuracy(model, x, wrong) <= 0.17


def test_scenes_classifier_is_not_forgiving():
    """Colour and texture define a scenes class: greying or swapping channels must break recognition
    (the shapes classifier still reads 100% of grey shapes, docs/TESTBED.md)."""
    acc = corruption_accuracy("scenes", n=300)
    assert acc["clean"] >= 0.98
    assert acc["grey"] < 0.4 and acc["channels_brg"] < 0.2 and acc["blur_sigma3"] < 0.7


def test_classifier_training_is_deterministic_and_round_trips(tmp_path, monkeypatch):
    monkeypatch.setitem(clf.TRAIN_CONFIG, "digits", (1, 3e-3, 2))  # one epoch: a few seconds
    assert clf.main(["--train", "digits", "--out", str(tmp_path)]) == 0
    again, info = clf.train_classifier("digits", seed=0)
    loaded = clf.load_classifier("digits", assets=tmp_path)
    for k, v in again.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert info["seed"] == 0 and 0 < info["test_accuracy"] <= 1
    with pytest.raises(VarcompressError, match="--train shapes"):
        clf.load_classifier("shapes", assets=tmp_path)
    with pytest.raises(VarcompressError, match="valid names"):
        clf.load_classifier("nope")


def test_evaluator_scores_real_reference_as_perfect():
    x, y = get_dataset("digits", "test", n=200)
    ev = TestbedEvaluator("digits", reference=x)
    out = ev.evaluate(x, y)
    assert out["n"] == 200 and out["accuracy"] >= 0.97
    assert out["fid"] == pytest.approx(0.0, abs=1e-6) and out["precision"] == out["recall"] == 1.0
    assert "class_accuracy" not in out


def test_per_class_accuracy_counts_each_class_on_its_own():
    x, y = get_dataset("digits", "test", n=200)
    ev = TestbedEvaluator("digits", reference=x)
    wrong = y == 3
    y_bad = torch.where(wrong, torch.full_like(y, 4), y)   # every 3 labelled 4: class 3 empty, class 4 half wrong
    per = ev.evaluate(x, y_bad, per_class=True)["class_accuracy"]
    assert len(per) == 10 and math.isnan(per[3])
    n4, n3 = int((y == 4).sum()), int(wrong.sum())
    assert per[4] <= (n4 + 0.5) / (n4 + n3) and min(per[c] for c in range(10) if c not in (3, 4)) >= 0.9
    for bad in [(x[:, :1], y), (x * 2, y), (x, y[:10]), (x, y.float()), (x[:3], y[:3])]:
        with pytest.raises(VarcompressError):
            ev.evaluate(*bad)


@pytest.mark.parametrize("name, n", [("shapes", 400), ("digits", 300), ("scenes", 300)])
def test_reference_scores_floor_far_below_ceiling(name, n):
    s = reference_scores(name, n)
    floor, ceil = s["floor"], s["ceiling"]
    assert s["n"] == floor["n"] == ceil["n"] == n
    assert floor["accuracy"] >= THRESHOLDS[name] - 0.02
    assert ceil["fid"] > 5 * floor["fid"]
    assert floor["precision"] > ceil["precision"] + 0.3
    assert floor["recall"] > ceil["recall"] + 0.3
