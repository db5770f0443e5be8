"""Expert construction: balanced clustering, exact regrouping, routed dispatch, router modes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from varcompress.activated.clustering import balanced_assign, cluster_neurons
from varcompress.activated.experts import ExpertCall, ExpertFFN
from varcompress.activated.router import Router, dynamic_mask, fit_router, topk_mask
from varcompress.activated.selector import TokenSelector, fit_selector, upsample_tokens
from varcompress.errors import VarcompressError


def dense_ffn(C=16, H=64, seed=0):
    torch.manual_seed(seed)
    fc1, fc2 = nn.Linear(C, H), nn.Linear(H, C)
    return fc1, fc2, lambda x: fc2(nn.functional.gelu(fc1(x), approximate="tanh"))


@pytest.mark.parametrize("method", ["kmeans", "coact", "random"])
def test_clusters_are_balanced_partitions(method):
    fc1, _, _ = dense_ffn()
    acts = torch.randn(200, 64)
    groups = cluster_neurons(method, fc1.weight, 4, seed=0, acts=acts)
    assert groups.shape == (4, 16)
    assert sorted(groups.flatten().tolist()) == list(range(64))


def test_balanced_assign_respects_capacity():
    import numpy as np
    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(0, 0.1, (30, 2)), rng.normal(5, 0.1, (2, 2))])
    labels = balanced_assign(feats, np.array([[0.0, 0.0], [5.0, 5.0]]), cap=16)
    assert np.bincount(labels).tolist() == [16, 16]
    assert (labels[30:] == 1).all()  # the far points keep their own centre


def test_all_experts_reproduce_dense_and_routed_matches_reference():
    fc1, fc2, ref = dense_ffn()
    groups = torch.randperm(64).view(4, 16)
    m = ExpertFFN.from_dense(fc1, fc2, groups, "tanh", shared=1, top_k=3).eval()
    x = torch.randn(3, 10, 16)
    with torch.no_grad():
        assert torch.allclose(m(x), ref(x), atol=1e-6)
        m.top_k = 1
        X = x.reshape(-1, 16)
        _, mask = m.route(X)
        want = m.experts_b2 + m.partial(X, 0)
        for j in range(3):
            want = want + mask[:, j:j + 1] * m.partial(X, 1 + j)
        plan = ExpertCall()
        assert torch.allclose(m(x, plan).reshape(-1, 16), want, atol=1e-6)
        assert plan.active[m] == pytest.approx(2.0)  # reported back to the caller
        assert m.active_hidden() == 2 * 16


def test_straight_through_forward_value_and_gradients():
    fc1, fc2, _ = dense_ffn()
    m = ExpertFFN.from_dense(fc1, fc2, torch.arange(64).view(4, 16), "tanh", top_k=2)
    x = torch.randn(8, 16)
    with torch.no_grad():
        hard = m.eval()(x)
    m.train()
    out = m(x, ExpertCall(dispatch="masked"))
    assert torch.allclose(out, hard, atol=1e-5)
    out.pow(2).sum().backward()
    assert m.router.net.weight.grad is not None and m.router.net.weight.grad.abs().sum() > 0


def test_router_fit_and_masks():
    torch.manual_seed(0)
    X = torch.randn(512, 16)
    W = torch.randn(16, 4)
    norms = (X @ W).exp()  # log-norm exactly linear: the linear router must recover it
    r = Router(16, 4, "linear", target="log")
    assert fit_router(r, X, norms)["r2"] > 0.999
    mlp = Router(16, 4, "mlp", hidden=32, target="norm")
    assert fit_router(mlp, X, norms.log().clamp(-3, 3) + 3, steps=100)["r2"] > 0.5
    s = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    assert topk_mask(s, 2).tolist() == [[True, False, True, False]]
    assert dynamic_mask(torch.tensor([[1.0, 0.6, 0.4, 0.1]]), 0.5).tolist() == [[True, True, False, False]]


def test_selector_fit_and_upsample():
    torch.manual_seed(0)
    sel = TokenSelector(8, "learned")
    x_in = torch.randn(400, 8)
    w = torch.randn(8)
    x_out = x_in + torch.randn(400, 8) * sel.features(x_in).matmul(w).exp()[:, None]
    r2 = fit_selector(sel, x_in, x_out - x_in, torch.randint(0, 3, (400,)))["r2_within_scale"]
    assert r2 > 0.5
    t = torch.arange(4.0).view(1, 4, 1)
    assert upsample_tokens(t, 2, 4, "nearest").view(4, 4).tolist()[0] == [0, 0, 1, 1]
    assert upsample_tokens(t, 2, 2, "bilinear").flatten().tolist() == [0, 1, 2, 3]


def test_compensation_adds_the_conditional_mean_of_skipped_experts():
    fc1, fc2, ref = dense_ffn()
    m = ExpertFFN.from_dense(fc1, fc2, torch.arange(64).view(4, 16), "tanh", top_k=2).eval()
    X = torch.randn(50, 16)
    with torch.no_grad():
        m.calibrate_compensation(X)
        _, mask = m.route(X)
        for j in range(4):  # mean of expert j's output over the tokens where top-2 routing skips it
            skipped = ~mask[:, j]
            assert torch.allclose(m.skip_mean[2, j], m.partial(X[skipped], j).mean(0), atol=1e-5)
        want = m.experts_b2.expand(50, -1).clone()
        for j in range(4):
            want = want + torch.where(mask[:, j:j + 1], m.partial(X, j), m.skip_mean[2, j])
        assert torch.allclose(m(X), want, atol=1e-5)
        m.top_k = 4  # every expert on: dense output
        assert torch.allclose(m(X), ref(X), atol=1e-5)


def test_a_plan_for_another_input_is_refused():
    """An ExpertCall belongs to one call; a row mask of another length must fail loudly, not misroute."""
    fc1, fc2, ref = dense_ffn()
    m = ExpertFFN.from_dense(fc1, fc2, torch.randperm(64).view(4, 16), "tanh", top_k=2).eval()
    plan = ExpertCall(routed=torch.ones(30, dtype=torch.bool))
    with torch.no_grad():
        m(torch.randn(3, 10, 16), plan)  # 30 tokens: fine
        with pytest.raises(VarcompressError, match="routes 30 tokens but the input has 20"):
            m(torch.randn(2, 10, 16), plan)
        with pytest.raises(VarcompressError, match="dispatch 'grouped' is not one of"):
            m(torch.randn(2, 10, 16), ExpertCall(dispatch="grouped"))
