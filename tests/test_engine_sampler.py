"""The engine's top-k-first sampler draws from exactly the reference sampler's distribution."""
from __future__ import annotations

import pytest
import torch

from varcompress.engine.sampler import filtered_probs, sample_top_k_top_p_fast, top_k_top_p_survivors
from varcompress.models.sampler import filter_top_k_top_p, sample_top_k_top_p

SETTINGS = [(0, 0.0), (1, 0.0), (5, 0.0), (0, 0.9), (10, 0.8), (40, 0.5), (64, 0.96), (900, 0.96), (17, 0.999)]


def _logits(seed=0, shape=(2, 3, 64), scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale


def _reference_probs(logits, top_k, top_p):
    return filter_top_k_top_p(logits.clone(), top_k, top_p).softmax(dim=-1)


@pytest.mark.parametrize("top_k,top_p", SETTINGS)
def test_probabilities_equal_reference(top_k, top_p):
    for seed, scale in ((0, 3.0), (1, 0.3), (2, 8.0)):
        logits = _logits(seed, scale=scale)
        ref = _reference_probs(logits, top_k, top_p)
        got = filtered_probs(logits, top_k, top_p)
        assert torch.equal(ref > 0, got > 0), "different surviving tokens"
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


def test_survivors_are_ascending_and_masked_only_by_top_p():
    logits = _logits(3)
    vals, ids = top_k_top_p_survivors(logits, top_k=20, top_p=0.7)
    assert vals.shape == ids.shape == (2, 3, 20)
    finite = vals.isfinite()
    assert finite[..., -1].all(), "the most likely token is always kept"
    # dropped tokens are the lowest ones: finite entries form a suffix
    assert (finite.int().diff(dim=-1) >= 0).all()
    top = logits.gather(-1, ids)
    assert (top.diff(dim=-1) >= 0).all()


def test_greedy_and_unfiltered():
    logits = _logits(4)
    assert torch.equal(sample_top_k_top_p_fast(logits, top_k=1), logits.argmax(-1))
    g = torch.Generator().manual_seed(0)
    idx = sample_top_k_top_p_fast(logits, top_k=0, top_p=0.0, generator=g)
    assert idx.shape == (2, 3) and idx.dtype == torch.int64


@pytest.mark.parametrize("method,max_rounds", [("sorted", 8), ("rejection", 8), ("rejection", 1)])
@pytest.mark.parametrize("top_k,top_p", [(5, 0.0), (0, 0.7), (6, 0.8), (12, 0.95), (0, 0.3)])
def test_sample_frequencies_match_reference_probabilities(top_k, top_p, method, max_rounds):
    """200k draws: every token's frequency within 5 standard errors of the reference probability.

    Both top-p methods; rejection with one round sends every rejected row to the sorted
    fallback, so the mixture of the two paths is checked too (top_p 0.3 rejects often)."""
    logits = _logits(5, shape=(1, 1, 16), scale=1.5)
    p = _reference_probs(logits, top_k, top_p).view(-1)
    n = 200_000
    g = torch.Generator().manual_seed(123)
    draws = sample_top_k_top_p_fast(logits.expand(1, n, 16).contiguous(), top_k, top_p, generator=g,
                                    method=method, max_rounds=max_rounds).view(-1)
    freq = torch.bincount(draws, minlength=16).double() / n
    assert (freq[p == 0] == 0).all(), "drew a token the reference never draws"
    se = (p.double() * (1 - p.double()) / n).sqrt().clamp_min(1e-9)
    assert ((freq - p.double()).abs() <= 5 * se + 1e-12).all(), (freq, p)
    # and the reference sampler agrees with the same statistic (the test itself is sound)
    g = torch.Generator().manual_seed(321)
    ref_draws = sample_top_k_top_p(logits.expand(1, n, 16).contiguous(), top_k, top_p, generator=g).view(-1)
    ref_freq = torch.bincount(ref_draws, minlength=16).double() / n
    assert ((ref_freq - freq).abs() <= 7 * se + 1e-12).all()


def test_sampler_does_not_modify_logits_and_handles_bf16():
    logits = _logits(6)
    before = logits.clone()
    sample_top_k_top_p_fast(logits, top_k=7, top_p=0.9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits, before)
    idx = sample_top_k_top_p_fast(logits.bfloat16(), top_k=7, top_p=0.9, generator=torch.Generator().manual_seed(0))
    assert idx.shape == (2, 3)


def test_rejection_rounds_and_rows_are_independent():
    """Rows with different logits in one call: each row's draws follow its own reference distribution."""
    rows = torch.stack([_logits(s, shape=(24,), scale=sc) for s, sc in ((7, 0.5), (8, 2.0), (9, 6.0))])
    n = 60_000
    logits = rows.repeat(n, 1).view(1, 3 * n, 24)
    g = torch.Generator().manual_seed(5)
    draws = sample_top_k_top_p_fast(logits, 10, 0.6, generator=g, method="rejection").view(n, 3)
    for r in range(3):
        p = _reference_probs(rows[r], 10, 0.6).double()
        freq = torch.bincount(draws[:, r], minlength=24).double() / n
        assert (freq[p == 0] == 0).all()
        se = (p * (1 - p) / n).sqrt().clamp_min(1e-9)
        assert ((freq - p).abs() <= 5 * se + 1e-12).all(), (r, freq, p)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method"):
        sample_top_k_top_p_fast(_logits(0), 5, 0.9, method="fast")


def test_never_draws_outside_top_k_with_large_vocabulary():
    """V > k: the sort-free path maps survivor positions back to vocabulary ids."""
    logits = _logits(10, shape=(4, 50, 1000), scale=2.0)
    allowed = filtered_probs(logits, 30, 0.9) > 0
    for method in ("sorted", "rejection"):
        idx = sample_top_k_top_p_fast(logits, 30, 0.9, generator=torch.Generator().manual_seed(1), method=method)
        assert allowed.gather(-1, idx.unsqueeze(-1)).all(), method
