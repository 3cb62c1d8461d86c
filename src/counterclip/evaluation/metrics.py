"""Accuracy with 95 % Wilson score intervals (honest for small n and for accuracies near 0 or 1)."""

from __future__ import annotations

import math


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_metrics(prefix: str, correct: int, n: int) -> dict:
    lo, hi = wilson_interval(correct, n)
    return {f"{prefix}_acc": correct / n if n else float("nan"), f"{prefix}_acc_ci95": [lo, hi]}
