"""The reference top-k / top-p filter follows the official rule."""
import torch

from varcompress.models.sampler import filter_top_k_top_p, sample_top_k_top_p


def test_top_k_keeps_exactly_k():
    logits = torch.randn(2, 3, 50)
    out = filter_top_k_top_p(logits.clone(), top_k=5)
    assert (torch.isfinite(out).sum(-1) == 5).all()
    assert torch.equal(out.argmax(-1), logits.argmax(-1))


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[[0.5, 0.3, 0.15, 0.05]]])
    out = filter_top_k_top_p(probs.log(), top_p=0.7)
    # ascending cumulative: 0.05, 0.20, 0.50, 1.0; drop those <= 0.3 -> keep 0.5 and 0.3
    assert torch.isfinite(out).tolist() == [[[True, True, False, False]]]


def test_top_p_always_keeps_the_argmax():
    out = filter_top_k_top_p(torch.tensor([[[5.0, 0.0, 0.0]]]), top_p=1e-6)
    assert torch.isfinite(out).sum() == 1 and torch.isfinite(out[0, 0, 0])


def test_sampling_frequencies_follow_the_filtered_distribution():
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0]]]).expand(1, 20000, 4).contiguous()
    draws = sample_top_k_top_p(logits, top_k=3, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws.flatten(), minlength=4).float() / draws.numel()
    expect = torch.tensor([2.0, 1.0, 0.0]).softmax(0)
    assert freq[3] == 0
    torch.testing.assert_close(freq[:3], expect, atol=0.015, rtol=0)
