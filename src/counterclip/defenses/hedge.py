"""Hedge Defence (Wu et al., *Attacking Adversarial Attacks as a Defense*, 2021)."""

from __future__ import annotations

import torch.nn.functional as F

from .. import rng
from ._sign_steps import SignStepDefense
from .base import DEFENSES


@DEFENSES.register("hedge", summary="Hedge Defence: ascent on every class's loss (Wu et al., ICCV 2021)")
class HedgeDefence(SignStepDefense):
    """Uniform random start in ``[-eps, eps]``, then ``steps`` signed-gradient *ascent* steps on the sum of the
    cross-entropy losses over **all** classes (pushing the input away from every class at once, which moves
    adversarial points, close to a wrong boundary, more than clean ones); classify the result. Wu et al. used
    larger budgets on CIFAR; for CLIP we match TTC's: ``eps=4/255``, ``steps=2``, ``step_size=1/255``
    (configurable). Randomised through its start (seed it with ``generator``)."""

    name = "hedge"
    randomized = True

    def start(self, x, generator):
        return (x + rng.uniform_like(x, -self.eps, self.eps, generator)).clamp(0, 1) - x

    def objective(self, logits, ctx):
        # sum_c CE(logits, c) = -sum_c log p_c, summed over the batch
        return -F.log_softmax(logits.float(), dim=-1).sum()
