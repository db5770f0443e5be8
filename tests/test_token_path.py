"""The token path (convert.token_path): selection, gather, reconstruction strategies, merge."""
from __future__ import annotations

import pytest
import torch

from varcompress.activated import token_path as tp
from varcompress.activated.selector import TokenSelector, upsample_tokens

PN = (1, 2, 3, 4)


def test_scale_spans_lay_scales_out_in_order():
    assert tp.scale_spans(PN, 0, 4) == [(0, 0, 1), (1, 1, 4), (2, 5, 9), (3, 14, 16)]
    assert tp.scale_spans(PN, 2, 3) == [(2, 0, 9)]


def test_keep_indices_are_the_top_k_in_raster_order_and_the_mask_agrees():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.7, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0]])
    assert tp.keep_indices(scores, 2).tolist() == [[1, 3], [0, 1]]
    assert tp.keep_mask(scores, 3).tolist() == [[False, True, False, True, True], [True, True, True, False, False]]


def test_select_scales_keeps_full_scales_and_scores_with_the_previous_map():
    torch.manual_seed(0)
    sel = TokenSelector(8, "residual")
    x = torch.randn(2, sum(p * p for p in PN), 8)
    kept = tp.select_scales(sel, x, PN, 0, 4, [1, 4, 5, 6])
    assert [k.shape for k in kept] == [(2, 1), (2, 4), (2, 5), (2, 6)]
    assert kept[1].tolist() == [[0, 1, 2, 3]] * 2
    want = tp.keep_indices(sel(x[:, 14:], x[:, 5:14], 3, 4), 6)
    assert torch.equal(kept[3], want)
    # cached generation: one scale per call, the previous scale's map passed in
    assert torch.equal(tp.select_scales(sel, x[:, 14:], PN, 3, 4, [1, 4, 5, 6], x_prev=x[:, 5:14])[0], want)


def test_gather_tokens_positions_and_bias():
    x = torch.arange(2 * 5 * 3.0).view(2, 5, 3)
    idx = torch.tensor([[0, 2], [1, 4]])
    assert torch.equal(tp.gather_tokens(x, idx), torch.stack([x[0, [0, 2]], x[1, [1, 4]]]))
    spans = tp.scale_spans(PN, 0, 2)
    pos = tp.flat_positions([torch.zeros(2, 1, dtype=torch.long), idx], spans)
    assert pos.tolist() == [[0, 1, 3], [0, 2, 5]]
    bias = torch.randn(1, 1, 6, 6)
    got = tp.gather_bias(bias, pos)
    for b in range(2):
        assert torch.equal(got[b, 0], bias[0, 0][pos[b]][:, pos[b]])


def test_reconstruction_strategies():
    torch.manual_seed(0)
    u1, u2, x3 = torch.randn(2, 4, 3), torch.randn(2, 9, 3), torch.randn(2, 16, 3)
    carry = tp.Carry(u_prev=u2, u_cache=u1)
    ident = tp.Reconstruction("identity", PN)
    assert torch.equal(ident.base(3, x3, carry), torch.zeros_like(x3))
    prev = tp.Reconstruction("prev_scale", PN, "nearest")
    assert torch.equal(prev.base(3, x3, carry), upsample_tokens(u2, 3, 4, "nearest"))
    assert torch.equal(prev.base(0, x3[:, :1], tp.Carry()), torch.zeros(2, 1, 3))  # nothing before scale 0
    cached = tp.Reconstruction("cached", PN, "area", cache_scale=1)
    assert torch.equal(cached.base(3, x3, carry), upsample_tokens(u1, 2, 4, "area"))
    assert torch.equal(cached.base(1, u1, carry), torch.zeros_like(u1))  # not after the cache scale
    sparse = [False, False, True, True]
    assert [prev.keeps_update(s, sparse) for s in range(4)] == [False, True, True, False]
    assert [cached.keeps_update(s, sparse) for s in range(4)] == [False, True, False, False]
    assert not any(ident.keeps_update(s, sparse) for s in range(4))
    with pytest.raises(ValueError, match="unknown reconstruction"):
        tp.Reconstruction("nope", PN)


def test_a_new_strategy_slots_in_by_name(monkeypatch):
    monkeypatch.setitem(tp.RECONSTRUCTIONS, "ones", tp.Strategy(lambda r, s, c: torch.ones(2, PN[s] ** 2, 3),
                                                                lambda r, s, sparse: False))
    rec = tp.Reconstruction("ones", PN)
    x = torch.zeros(2, 4, 3)
    y, u = tp.merge_scale(x, x[:, :1], torch.full((2, 1, 3), 7.0), torch.zeros(2, 1, dtype=torch.long),
                          rec.base(1, x, tp.Carry()))
    assert y[:, 0].eq(7).all() and y[:, 1:].eq(1).all() and u[:, 1:].eq(1).all()


@pytest.mark.parametrize("inplace", [False, True])
def test_merge_scale_keeps_computed_rows_and_reconstructs_the_rest(inplace):
    torch.manual_seed(0)
    x, base = torch.randn(2, 9, 3), torch.randn(2, 9, 3)
    idx = torch.tensor([[1, 4, 8], [0, 2, 3]])
    xk = tp.gather_tokens(x, idx)
    yk = xk + torch.randn_like(xk)
    y, u = tp.merge_scale(x, xk, yk, idx, base.clone(), inplace=inplace)
    for b in range(2):
        skip = [i for i in range(9) if i not in idx[b].tolist()]
        assert torch.equal(y[b, idx[b]], yk[b]) and torch.equal(y[b, skip], x[b, skip] + base[b, skip])
        assert torch.equal(u[b, idx[b]], yk[b] - xk[b]) and torch.equal(u[b, skip], base[b, skip])
    full = torch.arange(9).expand(2, 9)
    y, u = tp.merge_scale(x, x, x + 1, full, None)
    assert torch.equal(y, x + 1) and torch.equal(u, (x + 1) - x)


@pytest.mark.parametrize("kind", ["identity", "prev_scale", "cached"])
def test_all_scales_at_once_equal_scale_by_scale_with_the_carry(kind):
    """Teacher forcing (one call) and cached generation (one call per scale) share the token path."""
    torch.manual_seed(0)
    rec = tp.Reconstruction(kind, PN, cache_scale=1)
    sel, keep = TokenSelector(4, "residual"), [1, 4, 5, 8]
    x = torch.randn(2, 30, 4)
    f = lambda t: torch.tanh(t) * 2  # noqa: E731 - any per-token block
    kept = tp.select_scales(sel, x, PN, 0, 4, keep)
    xk = tp.gather_tokens(x, tp.flat_positions(kept, tp.scale_spans(PN, 0, 4)))
    y_all, _ = tp.reconstruct_scales(rec, x, xk, f(xk), kept, 0, tp.Carry())
    carry, outs = tp.Carry(), []
    for s, off, n in tp.scale_spans(PN, 0, 4):
        xs = x[:, off:off + n]
        idx = tp.select_scales(sel, xs, PN, s, s + 1, keep, carry.x_prev)
        xks = tp.gather_tokens(xs, idx[0])
        y, carry = tp.reconstruct_scales(rec, xs, xks, f(xks), idx, s, carry)
        outs.append(y)
    assert torch.equal(torch.cat(outs, 1), y_all)


@pytest.mark.parametrize("kind", ["identity", "prev_scale", "cached"])
def test_skip_bases_are_what_a_lone_skipped_token_gets(kind):
    """The selector's target: a token skipped alone (every other token computed) gets x + its skip base."""
    torch.manual_seed(1)
    rec = tp.Reconstruction(kind, PN, cache_scale=1)
    x = torch.randn(2, 30, 4)
    y = torch.tanh(x) * 2                       # the block's output at every token
    bases = tp.skip_bases(rec, y - x)
    assert bases.shape == x.shape and torch.equal(bases[:, :1], torch.zeros(2, 1, 4))   # scale 0: nothing earlier
    for s, off, n in tp.scale_spans(PN, 0, 4):
        skipped = n // 2
        kept = [torch.arange(m).expand(2, m) for m in (p * p for p in PN)]
        kept[s] = torch.tensor([i for i in range(n) if i != skipped], dtype=torch.long).expand(2, n - 1)
        pos = tp.flat_positions(kept, tp.scale_spans(PN, 0, 4))
        xk = tp.gather_tokens(x, pos)
        out, _ = tp.reconstruct_scales(rec, x, xk, tp.gather_tokens(y, pos), kept, 0, tp.Carry())
        assert torch.allclose(out[:, off + skipped], x[:, off + skipped] + bases[:, off + skipped], atol=1e-6)
    if kind == "identity":
        assert torch.equal(bases, torch.zeros_like(x))
