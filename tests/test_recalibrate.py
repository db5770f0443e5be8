"""recalibrate: refits compensation means and expected activity on the model's own activations."""
from __future__ import annotations

import pytest
import torch

from varcompress.activated.recalibrate import recalibrate, routed_inputs
from varcompress.convert import ConvertConfig, convert

from .helpers import tiny_var


def _converted(**kw):
    var = tiny_var(0)
    g = torch.Generator().manual_seed(0)
    labels, x = torch.randint(0, 10, (8,), generator=g), torch.randn(8, var.L - 1, var.Cvae, generator=g)
    cfg = ConvertConfig(**{**dict(experts=4, top_k=2, calib_tokens=4096, router_steps=20), **kw})
    return convert(var, cfg, calib=(labels, x)), labels, x


@pytest.mark.parametrize("routing", ["topk", "dynamic"])
def test_first_block_statistics_come_back_from_the_same_maps(routing):
    """Block 0 sees the same inputs in teacher and student: refitting on the calibration maps
    (every routed token captured) restores what convert measured, after it was wiped."""
    act, labels, x = _converted(routing=routing, tau=0.5)
    m = act.blocks[0].expert_ffns()[0]
    want_mean, want_active = m.compensation().clone(), float(m.expected_active)
    m.skip_mean.zero_()
    m.skip_mean_dyn.zero_()
    m.expected_active.fill_(0.0)
    out = recalibrate(act, labels, x, compensation=True, tokens=100_000)
    torch.testing.assert_close(m.compensation(), want_mean, atol=1e-5, rtol=1e-4)
    assert float(m.expected_active) == pytest.approx(want_active, rel=1e-5)
    assert out["compensation_change"] > 0.5 and len(out["expected_active"]) == len(act.blocks)


def test_captures_only_routed_rows_and_subsamples():
    act, labels, x = _converted(expert_scales=2)
    routed_per_sample = sum(p * p for p in act.patch_nums[-2:])
    full = routed_inputs(act, labels, x, tokens=100_000, batch=4)
    assert all(X.shape[0] == len(labels) * routed_per_sample for X in full.values())
    few = routed_inputs(act, labels, x, tokens=40, batch=4)
    assert all(X.shape[0] == 40 for X in few.values())


def test_by_default_only_the_activity_is_refitted():
    act, labels, x = _converted(routing="dynamic", tau=0.5)
    m = act.blocks[1].expert_ffns()[0]
    means, active = m.compensation().clone(), float(m.expected_active)
    m.expected_active.fill_(0.0)
    assert recalibrate(act, labels, x)["compensation_change"] == 0.0
    assert torch.equal(m.compensation(), means) and 0 < float(m.expected_active) <= m.routed
    assert float(m.expected_active) == pytest.approx(active, rel=0.5)   # block 1 sees the student's inputs


def test_without_compensation_the_means_stay_zero():
    act, labels, x = _converted(compensation=False)
    recalibrate(act, labels, x, compensation=True)
    assert all(float(m.skip_mean.abs().sum()) == 0.0 for blk in act.blocks for m in blk.expert_ffns())
