"""Engine on activated models (convert): same tokens and logits as the model's own eager generation."""
from __future__ import annotations

import pytest
import torch

from varcompress.convert import ConvertConfig, convert
from varcompress.engine import Engine
from varcompress.engine.experts import FastExpertFFN
from varcompress.errors import VarcompressError

from .helpers import tiny_var
from .test_engine_generation import eager_logits, engine_logits
from .test_generation import tiny_vae

VARIANTS = {
    "topk": dict(top_k=2, keep_ratio=0.5),
    "shared+residual": dict(top_k=1, shared_experts=1, keep_ratio=0.6, selector="residual"),
    "identity-recon": dict(top_k=None, keep_ratio=0.5, reconstruction="identity"),
    "experts-only": dict(top_k=2, keep_ratio=1.0),
    "dynamic": dict(routing="dynamic", tau=0.3, keep_ratio=0.7, upsample="nearest"),
    "experts-last-2-scales": dict(top_k=1, keep_ratio=0.5, expert_scales=2),
    "experts-every-scale": dict(top_k=2, keep_ratio=0.5, expert_scales=None),
    "skipped-kv-computed": dict(top_k=2, keep_ratio=0.5, skipped_kv="computed", reconstruction="prev_scale"),
    "keep-per-block": dict(top_k=2, keep_ratio=[[1.0, 1.0, 0.5, 0.5], [1.0, 1.0, 0.9, 0.3]]),
}


@pytest.fixture(scope="module")
def dense():
    return tiny_var().attach_vae(tiny_vae())


def _convert(var, **kw):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, var.num_classes, (16,), generator=g)
    x = torch.randn(16, var.L - var.first_l, var.Cvae, generator=g)
    cfg = ConvertConfig(experts=4, sparse_scales=2, calib_tokens=512, router_steps=10, **kw)
    return convert(var, cfg, calib=(labels, x))


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("dispatch", ["segments", "grouped", "mixed"])
def test_engine_equals_activated_eager(monkeypatch, dense, name, dispatch):
    act = _convert(dense, **VARIANTS[name])
    labels = torch.tensor([3, 5, 1])
    img, idx, lg = eager_logits(monkeypatch, act, B=3, label_B=labels, g_seed=1, cfg=1.5, top_k=1)
    img2, idx2, lg2 = engine_logits(Engine(act, dispatch=dispatch), B=3, labels=labels, g_seed=1, cfg=1.5, top_k=1)
    for si, (a, b) in enumerate(zip(idx, idx2)):
        assert torch.equal(a, b), f"scale {si} tokens differ"
    for a, b in zip(lg, lg2):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(img2, img, atol=1e-5, rtol=1e-5)


def test_emulated_cuda_graphs_on_activated_model(dense):
    act = _convert(dense, **VARIANTS["topk"])
    ref, eng = Engine(act, dispatch="grouped"), Engine(act, dispatch="grouped")
    eng.cuda_graphs = True  # static state buffers for the gated blocks' previous-scale maps
    for labels, seed in (([1, 2], 0), ([4, 8], 2)):
        assert torch.equal(ref.generate(2, labels, g_seed=seed, top_k=1),
                           eng.generate(2, labels, g_seed=seed, top_k=1))


@pytest.mark.parametrize("dispatch", ["segments", "grouped", "mixed"])
@pytest.mark.parametrize("shared,top_k", [(0, 1), (0, 3), (1, 2), (2, 1), (1, 0)])
def test_fast_expert_ffn_equals_expert_ffn(dense, dispatch, shared, top_k):
    act = _convert(dense, top_k=top_k, shared_experts=shared, keep_ratio=1.0)
    m = act.blocks[0].expert_ffns()[0]
    if callable(getattr(m, "compensation", None)) and 0 < top_k < m.routed:  # compensation is exercised
        assert m.compensation().abs().sum() > 0
    fast = FastExpertFFN(m, torch.float32, torch.device("cpu"), dispatch)
    x = torch.randn(2, 37, m.in_features)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), m(x), atol=1e-5, rtol=1e-5)


def test_mixed_dispatch_takes_both_paths_and_unknown_dispatch_is_refused(dense, monkeypatch):
    """CPU default: small calls grouped, large calls by segments, with equal results."""
    from varcompress.engine import experts

    act = _convert(dense, top_k=2, keep_ratio=1.0)
    m = act.blocks[0].expert_ffns()[0]
    fast = FastExpertFFN(m, torch.float32, torch.device("cpu"))
    assert fast.dispatch == "mixed"
    seen, grouped = [], FastExpertFFN._grouped

    def spy(self, *a):
        seen.append("grouped")
        return grouped(self, *a)
    monkeypatch.setattr(FastExpertFFN, "_grouped", spy)
    x_small, x_big = torch.randn(1, 5, m.in_features), torch.randn(4, experts.GROUPED_MAX_PAIRS, m.in_features)
    with torch.no_grad():
        for x, path in ((x_small, ["grouped"]), (x_big, [])):
            seen.clear()
            torch.testing.assert_close(fast(x), m(x), atol=1e-5, rtol=1e-5)
            assert seen == path
    with pytest.raises(VarcompressError, match="dispatch"):
        FastExpertFFN(m, torch.float32, torch.device("cpu"), "fastest")
