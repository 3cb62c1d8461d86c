"""The eps-ball geometry, once: random starts, projection onto the ball and the [0,1] box, for L-inf and L2.

Attacks, defenses and the grid's storage all move inside the same ball. Two forms are kept because floating
point makes them differ in the last bit, and each caller has always used one: ``apply_delta(x, delta)`` gives
the point ``x + delta`` clipped into the ball and the box; ``clip_delta(delta, x)`` gives that point's
perturbation (``apply_delta(...) - x``). A start is drawn from the caller's generator (``counterclip.rng``).
"""

from __future__ import annotations

import torch

from . import rng

NORMS = ("linf", "l2")


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


def into_ball(delta: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """``delta`` projected onto the ``norm`` ball of radius ``eps`` (per sample for L2)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _per_sample(delta).clamp_min(1e-12)).clamp(max=1.0)


def apply_delta(x: torch.Tensor, delta: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """The point ``x + delta``, with ``delta`` in the ball and the point in [0,1]."""
    return (x + into_ball(delta, eps, norm)).clamp(0, 1)


def clip_delta(delta: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """The perturbation of ``apply_delta(x, delta)``: in the ball, and ``x + delta`` in [0,1]."""
    return apply_delta(x, delta, eps, norm) - x


def random_delta(x: torch.Tensor, eps: float, generator=None, norm: str = "linf") -> torch.Tensor:
    """A random start in the ball, not yet clipped to the box: uniform per element (L-inf), or a uniform
    direction with a radius uniform in [0, eps] (L2, torchattacks' PGDL2 start and the TTC reference's)."""
    if norm == "linf":
        return rng.uniform_like(x, -eps, eps, generator)
    d = rng.randn(x.shape, generator, x.device, x.dtype)
    d = d / _per_sample(d).clamp_min(1e-12)
    r = rng.rand((x.shape[0],), generator, x.device, x.dtype).view(-1, *([1] * (x.ndim - 1)))
    return d * r * eps


def start_point(x: torch.Tensor, eps: float, generator=None, norm: str = "linf") -> torch.Tensor:
    """``x`` plus a random start, clipped to [0,1] (attacks' random start)."""
    return (x + random_delta(x, eps, generator, norm)).clamp(0, 1)


def start_delta(x: torch.Tensor, eps: float, generator=None, norm: str = "linf") -> torch.Tensor:
    """The perturbation of ``start_point`` (defenses' delta0)."""
    return start_point(x, eps, generator, norm) - x
