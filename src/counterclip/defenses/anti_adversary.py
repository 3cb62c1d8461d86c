"""Anti-adversary (Alfarra et al., *Combating Adversaries with Anti-Adversaries*, AAAI 2022)."""

from __future__ import annotations

import torch.nn.functional as F

from ._sign_steps import SignStepDefense
from .base import DEFENSES


@DEFENSES.register("anti-adversary",
                   summary="Anti-adversary: steps toward the predicted class (Alfarra et al., AAAI 2022)")
class AntiAdversary(SignStepDefense):
    """Pseudo-label ``ŷ = argmax classifier(x)``, then ``steps`` updates ``δ ← δ − α·sign(∇_δ CE(f(x+δ), ŷ))``
    (toward the predicted class, the opposite of an attack) from ``δ = 0``, kept in an L∞ ball of ``eps``; classify
    ``x + δ``. Alfarra et al. use a few steps; for CLIP we match TTC's cost and budget: ``eps=4/255``,
    ``steps=2``, ``step_size=1/255`` (all configurable). Deterministic."""

    name = "anti-adversary"
    direction = -1.0

    def context(self, classifier, x):
        return classifier(x).argmax(-1)

    def objective(self, logits, y_hat):
        return F.cross_entropy(logits.float(), y_hat, reduction="sum")
