"""Top-k / top-p sampling with the official semantics (the reference sampler)."""
from __future__ import annotations

from types import MappingProxyType

import torch

# The official ImageNet sampling settings (read-only; `dict(OFFICIAL_SAMPLING)` for a copy to change).
OFFICIAL_SAMPLING = MappingProxyType({"cfg": 1.5, "top_k": 900, "top_p": 0.96})


def filter_top_k_top_p(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Mask logits (..., V) in place with -inf outside the top-k, then outside the top-p nucleus.

    top-p follows the official rule: sort ascending, drop tokens whose cumulative
    probability is <= 1 - top_p, and always keep the most likely one.
    """
    V = logits.shape[-1]
    if 0 < top_k < V:
        kth = logits.topk(top_k, dim=-1, largest=True, sorted=False)[0].amin(dim=-1, keepdim=True)
        logits.masked_fill_(logits < kth, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = logits.sort(dim=-1, descending=False)
        drop_sorted = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        drop_sorted[..., -1:] = False
        logits.masked_fill_(drop_sorted.scatter(-1, sorted_idx, drop_sorted), -torch.inf)
    return logits


def sample_top_k_top_p(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per position: (B, l, V) logits -> (B, l) indices."""
    B, l, V = logits_BlV.shape
    probs = filter_top_k_top_p(logits_BlV.clone(), top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs.view(-1, V), num_samples=1, replacement=True, generator=generator).view(B, l)
