"""PGD-train (spec section 1): the L-inf attack the three methods train on, in pixel space before ``P``.

Gradients are taken with respect to the perturbation only (``torch.autograd.grad(..., delta)``): the engine
then skips every weight-gradient kernel, nothing lands in a parameter's ``.grad``, and under DDP no all-reduce
fires because the attack runs on the unwrapped tower. The loss is the **sum** of per-sample losses, so each
sample's gradient is its own whatever the batch or the rank it sits on. The random start of sample i comes from
a generator keyed by (seed, epoch, global index i), so one process and K ranks draw the same start.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .. import rng


def start_generators(seed: int, dataset: str, epoch: int, indices) -> list[torch.Generator]:
    return rng.per_sample_generators(seed, dataset, indices, stream=f"finetune-start-epoch{epoch}")


def pgd_train(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, eps: float, steps: int,
              step_size: float, momentum: float = 0.0, clip_start: bool = True,
              generator: rng.GeneratorLike = None, reduction: str = "sum",
              leak_params: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """``x + delta`` after ``steps`` signed ascent steps on ``loss_fn`` (per-sample losses, shape (B,)).

    ``reduction="mean"`` and ``leak_params`` reproduce the TeCoA reference (its attack backpropagates a batch mean
    into the parameters too, and those gradients stay in ``.grad``); the default touches no parameter."""
    x = x.detach()
    delta = rng.uniform_like(x, -eps, eps, generator)
    if clip_start:
        delta = (x + delta).clamp(0, 1) - x
    velocity = None
    for _ in range(steps):
        delta.requires_grad_(True)
        per_sample = loss_fn(x + delta)
        loss = per_sample.sum() if reduction == "sum" else per_sample.mean()
        if leak_params:
            leak = [p for p in leak_params if p.requires_grad]
            grads = torch.autograd.grad(loss, [delta, *leak])
            for p, g in zip(leak, grads[1:]):
                p.grad = g if p.grad is None else p.grad + g
            grad = grads[0]
        else:
            (grad,) = torch.autograd.grad(loss, [delta])
        direction = grad.sign()
        if momentum:
            # the velocity is replaced by the sign of (mu * previous velocity + current sign), and that sign
            # is the step direction (spec section 1, step 2.2)
            direction = direction if velocity is None else (momentum * velocity + direction).sign()
            velocity = direction
        delta = (delta.detach() + step_size * direction).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()
