"""TTE: test-time transformation ensembling (Pérez et al., *Enhancing Adversarial Robustness via Test-time
Transformation Ensembling*, ICCV-W 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import DEFENSES, Defense


@DEFENSES.register("tte", summary="TTE, test-time transformation ensembling (Pérez et al., ICCVW 2021)")
class TTE(Defense):
    """Average the logits over the input and label-preserving transforms: horizontal flip, and ``crops``
    padded crops (zero padding of ``pad`` of the image side on every border, then crops at the corners of
    the padded image) with their flips. Pérez et al. use flip + 4 crops with 4 px padding on 32 px CIFAR
    images; for CLIP we keep that geometry as a fraction of the side (``pad=0.125``: 28 px at 224, 3 px at
    28 px). Deterministic, gradient-free, and differentiable as it stands (its differentiable mode is exact).
    """

    name = "tte"
    per_sample_generators = True  # draws through counterclip.rng (batch-size invariant)
    differentiable_modes = ("full", "bpda")  # both exact: nothing to straight-through

    def __init__(self, flip: bool = True, crops: int = 4, pad: float = 0.125):
        if crops not in (0, 4):
            raise ValueError("TTE crops must be 0 or 4 (the corners of the padded image)")
        self.flip, self.crops, self.pad = flip, crops, float(pad)

    def views(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = [x]
        h, w = x.shape[-2:]
        p = max(1, round(self.pad * min(h, w))) if self.crops else 0
        if self.crops:
            padded = F.pad(x, (p, p, p, p))
            for dy, dx in ((0, 0), (0, 2 * p), (2 * p, 0), (2 * p, 2 * p)):
                out.append(padded[..., dy:dy + h, dx:dx + w])
        if self.flip:
            out += [v.flip(-1) for v in list(out)]
        return out

    def predict(self, classifier, x, generator=None):
        views = self.views(x)
        logits = classifier(torch.cat(views))
        return logits.view(len(views), len(x), -1).mean(0)

    def differentiable(self, classifier, x, generator=None, mode: str = "full"):
        return self.predict(classifier, x, generator)

    def params(self) -> dict:
        return {"flip": self.flip, "crops": self.crops, "pad": self.pad}
