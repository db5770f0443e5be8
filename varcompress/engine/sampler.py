"""Top-k / top-p sampling without sorting the vocabulary.

Same distribution as the reference `varcompress.sampling.sample_top_k_top_p` (official
semantics), computed on the k survivors of `torch.topk` instead of a full-V sort:

1. top-k: the k largest logits (`torch.topk`, sorted). The reference keeps every logit
   >= the k-th largest; the two sets differ only when logits tie exactly at the k-th
   value, which continuous logits never do.
2. top-p on the survivors, in the reference's arithmetic: ascending order, softmax,
   cumulative sum, drop where the cumulative probability is <= 1 - top_p, always keep the
   largest. Tokens outside the top-k have probability 0 in the reference, so they add
   exact zeros to its cumulative sum and change nothing.
3. one multinomial draw among the k survivors, mapped back to vocabulary ids.

The random stream is consumed differently from the reference (a draw over k instead
of V entries), so a given seed picks different tokens; the distribution is the same.
Every shape is static (no host synchronisation), so it can run inside a CUDA graph
or a compiled region, except for the multinomial draw with an explicit generator.
"""
from __future__ import annotations

import torch


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


def sample_top_k_top_p_fast(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per position: (B, l, V) logits -> (B, l) int64 indices."""
    B, l, V = logits_BlV.shape
    if not 0 < top_k < V and top_p <= 0:  # no filtering at all: plain softmax draw
        probs = logits_BlV.float().softmax(dim=-1).view(-1, V)
        return torch.multinomial(probs, num_samples=1, replacement=True, generator=generator).view(B, l)
    vals, ids = top_k_top_p_survivors(logits_BlV, top_k, top_p)
    k = vals.shape[-1]
    if k == 1:
        return ids.view(B, l)
    probs = vals.softmax(dim=-1).view(-1, k)
    pick = torch.multinomial(probs, num_samples=1, replacement=True, generator=generator)
    return ids.view(-1, k).gather(1, pick).view(B, l)
