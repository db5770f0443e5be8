"""Learning-rate schedule: linear warm-up then cosine decay to a floor."""
from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int, floor: float = 0.05) -> float:
    """Multiplier of the base learning rate at `step` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
