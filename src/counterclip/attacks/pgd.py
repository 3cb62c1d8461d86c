"""PGD (Madry et al., 2018), the paper's PGD-10, and its CW-margin variant.

``PGD(eps, steps=10, step_size=1/255, norm="linf"|"l2", loss="ce"|"cw", kappa=50)``: random start in the ball
(``uniform_(-eps, eps)`` on a tensor shaped like x, from ``generator`` or the global RNG, as torchattacks does),
then ``steps`` signed-gradient (L∞) or normalised-gradient (L2) ascent steps on the **summed** loss over the
batch, each followed by projection onto the eps-ball and [0,1]. The CE loss is on the classifier's logits
(``logit_scale``-scaled, 100 for OpenAI CLIP). ``loss="cw"`` ascends ``-Σ relu(z_y - max_{c≠y} z_c + κ)``.
Pointed at a randomised ``Defended``, each step's defense draws derive from ``generator`` (stream ``pgd:<step>``).

Beyond the paper's budgets, 10 steps of 1/255 cannot even cross the ball: ``step_size="auto"`` uses
``max(1/255, 2.5 * eps / steps)`` (Madry et al.'s 2.5·eps/steps rule, never below the paper's 1/255, so the
paper's budgets keep the paper's step); records say which step was used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import ball, progress
from ..budgets import eps_str, parse_eps, whole_number
from .base import ATTACKS, Attack, cw_margin_loss, input_grad, query

LOSSES = ("ce", "cw")


def auto_step_size(eps: float, steps: int) -> float:
    return max(1 / 255, 2.5 * eps / max(steps, 1))


@ATTACKS.register("cw", fixed={"loss": "cw"}, summary="PGD on the CW margin loss, kappa 50 (the paper's CW)")
@ATTACKS.register("pgd", summary="PGD on the cross-entropy (Madry et al., ICLR 2018); the paper's PGD-10")
class PGD(Attack):
    name = "pgd"

    def __init__(self, eps, steps: int = 10, step_size=1 / 255, norm: str = "linf", loss: str = "ce",
                 kappa: float = 50.0, random_start: bool = True, generator=None, dtype=torch.float32):
        super().__init__(eps, norm, generator, dtype)
        if loss not in LOSSES:
            raise ValueError(f"unknown PGD loss {loss!r}; valid: {', '.join(LOSSES)}")
        self.steps = whole_number("steps", steps)
        self.step_size = auto_step_size(self.eps, self.steps) if step_size == "auto" else parse_eps(step_size, "step_size", norm)
        self.loss, self.kappa, self.random_start = loss, float(kappa), random_start
        if loss == "cw":
            self.name = "cw"

    def loss_per_sample(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss == "ce":
            return F.cross_entropy(logits.float(), y, reduction="none")
        return cw_margin_loss(logits.float(), y, self.kappa)

    def random_init(self, x: torch.Tensor, generator) -> torch.Tensor:
        if not self.random_start:
            return x.clone()
        return ball.start_point(x, self.eps, generator, self.norm)

    def ascent_step(self, x_adv: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return x_adv + self.step_size * grad.sign()
        g = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return x_adv + self.step_size * g

    def perturb(self, classifier, x, y, generator):
        x_adv = self.random_init(x, generator)
        for i in range(self.steps):
            x_adv.requires_grad_(True)
            loss = self.loss_per_sample(query(classifier, x_adv, generator, f"pgd:{i}"), y).sum()
            grad = input_grad(loss, x_adv)
            x_adv = self.project(self.ascent_step(x_adv.detach(), grad), x)
            progress.advance(i + 1, self.steps)
        return x_adv

    def config(self) -> dict:
        cfg = super().config()
        cfg.update(steps=self.steps, step_size=self.step_size, step_size_str=eps_str(self.step_size), loss=self.loss)
        if self.loss == "cw":
            cfg["kappa"] = self.kappa
        if not self.random_start:  # --attack-arg pgd.random_start=false is another attack (default keys unchanged)
            cfg["random_start"] = False
        return cfg


def CW(eps, steps: int = 10, step_size=1 / 255, kappa: float = 50.0, **kw) -> PGD:
    """The paper's CW attack: the PGD loop ascending the CW margin loss (kappa = 50)."""
    return PGD(eps, steps=steps, step_size=step_size, loss="cw", kappa=kappa, **kw)
