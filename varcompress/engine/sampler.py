"""Top-k / top-p sampling without sorting the vocabulary.

Same distribution as the reference `varcompress.sampling.sample_top_k_top_p` (official
semantics: keep the k largest logits, then drop the ascending prefix whose cumulative
probability is <= 1 - top_p, always keeping the largest; draw in proportion to the
softmax of what is left), computed without its full-vocabulary sort:

1. top-k: the k largest logits (`torch.topk`). The reference keeps every logit >= the
   k-th largest; the sets differ only when logits tie exactly at the k-th value, which
   continuous logits never do. With k >= V every logit survives and no top-k runs.
2. the draw is an inverse-CDF lookup: one uniform per row and a binary search in the
   cumulative probabilities (`torch.multinomial` draws an exponential per candidate,
   which cost more than the sort on CPU).
3. top-p, two exact ways (`method`):
   - "sorted" (default on GPU: no host synchronisation, static shapes): sort the k
     survivors ascending and apply the reference's rule in its arithmetic.
   - "rejection" (default on CPU: no sort at all): draw from the survivors' softmax and
     accept a candidate t when the probability of the tokens no more likely than t
     exceeds 1 - top_p (it lies in the nucleus) or t is the most likely token; rows that
     reject draw again. Accepting is likelier than top_p, so a row needs one round with
     probability >= top_p; after `max_rounds` the remaining rows take the sorted path.
     Rejection sampling draws exactly the renormalised nucleus distribution.
   The two can disagree on membership only when a cumulative sum lands within float
   rounding of 1 - top_p, or at exact ties.

The random stream is consumed differently from the reference (and between the two
methods), so a given seed picks different tokens; the distribution is the same.
"""
from __future__ import annotations

import torch

METHODS = ("auto", "sorted", "rejection")


def top_k_top_p_survivors(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., V) logits -> (masked logits (..., k) ascending with -inf where top-p drops, ids (..., k))."""
    V = logits.shape[-1]
    k = top_k if 0 < top_k < V else V
    vals, ids = logits.float().topk(k, dim=-1, largest=True, sorted=True)
    vals, ids = vals.flip(-1), ids.flip(-1)  # ascending, as the reference's sort
    if top_p > 0:
        drop = vals.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        drop[..., -1:] = False
        vals = vals.masked_fill(drop, -torch.inf)
    return vals, ids


def filtered_probs(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """The full (..., V) probability vector the fast sampler draws from (for tests and analysis)."""
    vals, ids = top_k_top_p_survivors(logits, top_k, top_p)
    out = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)
    return out.scatter_(-1, ids, vals.softmax(dim=-1))


def _inverse_cdf(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of (rows, k) probabilities (need not sum to 1): (rows,) positions."""
    c = probs.cumsum(dim=-1)
    u = torch.rand(c.shape[0], 1, generator=generator, device=c.device, dtype=c.dtype) * c[:, -1:]
    # first position whose cumulative sum exceeds u: never one of probability 0
    return torch.searchsorted(c, u, right=True).view(-1).clamp_(max=c.shape[-1] - 1)


def _survivors(x: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(rows, V) float logits -> the top-k logits in any order and their ids (None: all of V)."""
    V = x.shape[-1]
    if 0 < top_k < V:
        return x.topk(top_k, dim=-1, largest=True, sorted=False)
    return x, None


def _draw_sorted(x: torch.Tensor, top_k: int, top_p: float, generator) -> torch.Tensor:
    vals, ids = top_k_top_p_survivors(x, top_k, top_p)
    pos = _inverse_cdf(vals.softmax(dim=-1), generator)
    return ids.gather(1, pos.unsqueeze(1)).view(-1)


def _draw_rejection(x: torch.Tensor, top_k: int, top_p: float, generator, max_rounds: int) -> torch.Tensor:
    vals, ids = _survivors(x, top_k)
    probs = vals.softmax(dim=-1)
    pmax = probs.amax(dim=-1)
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    rows = torch.arange(x.shape[0], device=x.device)
    for _ in range(max_rounds):
        p = probs.index_select(0, rows) if rows.numel() < x.shape[0] else probs
        pos = _inverse_cdf(p, generator)
        q = p.gather(1, pos.unsqueeze(1))
        mass = torch.where(p <= q, p, 0.0).sum(dim=-1)  # P(tokens no more likely than the candidate)
        ok = (mass > 1 - top_p) | (q.view(-1) >= pmax.index_select(0, rows))
        tok = pos if ids is None else ids.index_select(0, rows).gather(1, pos.unsqueeze(1)).view(-1)
        out.index_copy_(0, rows[ok], tok[ok])
        rows = rows[~ok]
        if rows.numel() == 0:
            return out
    out.index_copy_(0, rows, _draw_sorted(x.index_select(0, rows), top_k, top_p, generator))
    return out


def sample_top_k_top_p_fast(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                            generator: torch.Generator | None = None, method: str = "auto",
                            max_rounds: int = 8) -> torch.Tensor:
    """Draw one token per position: (B, l, V) logits -> (B, l) int64 indices."""
    B, l, V = logits_BlV.shape
    x = logits_BlV.reshape(-1, V).float()
    if top_k == 1:
        return x.topk(1, dim=-1).indices.view(B, l)
    if method not in METHODS:
        raise ValueError(f"sampler method {method!r} is not one of {METHODS}")
    if top_p <= 0:  # top-k only: no ordering needed
        vals, ids = _survivors(x, top_k)
        pos = _inverse_cdf(vals.softmax(dim=-1), generator)
        tok = pos if ids is None else ids.gather(1, pos.unsqueeze(1)).view(-1)
    elif method == "sorted" or (method == "auto" and x.is_cuda):
        tok = _draw_sorted(x, top_k, top_p, generator)
    else:
        tok = _draw_rejection(x, top_k, top_p, generator, max_rounds)
    return tok.view(B, l)
