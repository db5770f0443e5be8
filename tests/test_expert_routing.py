"""Expert routing (convert.router.expert_pairs / expert_mask) and the per-call plan (ExpertCall):
one routing for every dispatch strategy, eager ("loop", "masked") and engine (grouped, segments)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from varcompress.activated.experts import EAGER_DISPATCH, ExpertCall, ExpertFFN
from varcompress.activated.router import expert_mask, expert_pairs
from varcompress.engine.experts import FastExpertFFN


def _mask_pairs(mask):
    tok, exp = mask.nonzero(as_tuple=True)
    order = torch.argsort(exp, stable=True)
    return tok[order], exp[order]


@pytest.mark.parametrize("routing,k", [("topk", 1), ("topk", 3), ("topk", 0), ("dynamic", 0)])
def test_pairs_are_the_mask_grouped_by_expert_tokens_ascending(routing, k):
    torch.manual_seed(0)
    scores = torch.randn(50, 5)
    mask = expert_mask(scores, routing, k, 0.4, torch.exp)
    tok, exp = expert_pairs(scores, routing, k, 0.4, torch.exp)
    want_tok, want_exp = _mask_pairs(mask)
    assert torch.equal(tok, want_tok) and torch.equal(exp, want_exp)
    if routing == "topk":
        assert mask.sum(1).eq(k).all()


def _ffn(top_k=2, shared=0, routing="topk"):
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(16, 64), nn.Linear(64, 16)
    return ExpertFFN.from_dense(fc1, fc2, torch.randperm(64).view(4, 16), "tanh", shared=shared, top_k=top_k,
                                routing=routing, tau=0.4).eval()


@pytest.mark.parametrize("shared,top_k,routing", [(0, 2, "topk"), (1, 1, "topk"), (0, 0, "dynamic")])
def test_every_dispatch_gives_the_same_output(shared, top_k, routing):
    m = _ffn(top_k, shared, routing)
    with torch.no_grad():
        m.skip_mean.normal_()  # compensation exercised
        m.skip_mean_dyn.normal_()
        x = torch.randn(3, 11, 16)
        outs = {d: m(x, ExpertCall(dispatch=d)) for d in EAGER_DISPATCH}
        for d in ("segments", "grouped"):
            outs[d] = FastExpertFFN(m, torch.float32, torch.device("cpu"), d)(x)
    for d, o in outs.items():
        torch.testing.assert_close(o, outs["loop"], atol=1e-5, rtol=1e-5, msg=d)


def test_plan_routes_only_its_rows_and_reports_active_experts():
    m = _ffn(top_k=1)
    x = torch.randn(2, 5, 16)
    routed = torch.tensor([False, False, True, True, True]).repeat(2)
    with torch.no_grad():
        plan = ExpertCall(routed=routed)
        out = m(x, plan).reshape(-1, 16)
        X = x.reshape(-1, 16)
        dense, alone = m._forward_dense(X), m(X[routed], ExpertCall())
    assert torch.equal(out[~routed], dense[~routed]) and torch.allclose(out[routed], alone, atol=1e-6)
    assert plan.active == {m: pytest.approx(1.0)}  # over the routed rows
    none = ExpertCall(routed=False)
    with torch.no_grad():
        m(x, none)
    assert none.active[m] == 4.0  # every expert ran

