"""The learning rate of optimiser step ``t`` (0-based): linear warmup over ``W`` steps, then cosine to 0 at ``N``,
set before each step. FARE's reference code steps its scheduler after the optimiser instead, so its first
update runs at the full lr and the warmup starts one step late (``reference_fare=True``)."""

from __future__ import annotations

import math


def warmup_steps(warmup, total: int) -> int:
    """``warmup`` as a step count: a float in (0, 1) is a fraction of ``total``."""
    if isinstance(warmup, float) and 0 < warmup < 1:
        return max(1, round(warmup * total))
    return max(0, int(warmup))


def lr_at(step: int, base_lr: float, warmup: int, total: int, reference_fare: bool = False) -> float:
    if reference_fare:
        if step == 0:
            return base_lr
        step -= 1
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if total <= warmup:
        return 0.0
    return base_lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
