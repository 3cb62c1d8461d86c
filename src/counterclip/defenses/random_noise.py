"""RN: classify ``x + delta0`` with TTC's random start and no counterattack step (TTC with ``steps=0``), the
paper's random-noise baseline."""

from __future__ import annotations

from .base import DEFENSES
from .ttc import TTC


@DEFENSES.register("rn", before="ttc",
                   summary="RN: TTC's random start alone, no counterattack (the TTC paper's baseline)")
class RandomNoise(TTC):
    """``RandomNoise(eps=4/255, norm="linf")``: uniform noise in the eps-ball (clipped to [0,1]), then classify.

    From Xing et al. (CVPR 2025), Table 1's "RN". tau is still measured (for reports), never used."""

    name = "rn"
    dynamic = False
    differentiable_modes = ("full", "bpda")  # both exact: the noise does not depend on x

    def __init__(self, eps=4 / 255, norm: str = "linf", precision: str = "fp32"):
        super().__init__(eps=eps, steps=0, tau_thres=float("inf"), norm=norm, precision=precision)

    def differentiable(self, classifier, x, generator=None, mode: str = "full", delta0=None):
        if delta0 is None:
            delta0 = self.random_start(x.detach(), generator)
        return classifier(x + delta0)

    def params(self) -> dict:
        return {"eps": self.eps, "norm": self.norm, "precision": self.precision}
