"""KL(teacher || student) of next-token distributions: the one definition every caller uses.

Callers (convert's budget and variant comparison, the teacher-relative metrics, the
distillation losses) keep only their reduction (sum, mean over tokens, per scale).
"""
from __future__ import annotations

import torch


def log_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """float32 log-softmax over the last dimension, of the logits divided by `temperature`."""
    z = logits.float()
    if temperature != 1.0:  # dividing by 1 is exact: skip the op
        z = z / temperature
    return z.log_softmax(-1)


def token_kl(t_logp: torch.Tensor, s_logp: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per position (the last dimension summed), from log-probabilities."""
    return (t_logp.exp() * (t_logp - s_logp)).sum(-1)
