"""The serialisation stage of adversarial inputs (``--quantize none|round|truncate``).

Some reference harnesses save adversarial images as 8-bit files before the defense sees them: R-TPT and CSR
convert with truncation (``ToPILImage`` multiplies by 255 and casts), which erases every positive change smaller
than 1/255 and moves the rest down to the grid. The default here is ``none`` (the defense sees the attack's
float pixels); ``round`` is an honest 8-bit save; ``truncate`` reproduces the references' quirk so a user can see
what it is worth. A quantised input is projected back into the eps-ball around the clean image (and [0,1]), so
the threat model is unchanged whatever the mode.
"""

from __future__ import annotations

import torch

from .. import ball

MODES = ("none", "round", "truncate")


def serialise(x: torch.Tensor, x_adv: torch.Tensor, eps: float, mode: str = "none") -> torch.Tensor:
    if mode not in MODES:
        raise ValueError(f"unknown quantize mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "none":
        return x_adv
    scaled = x_adv * 255
    # truncate: as `ToPILImage` (`mul(255).byte()`), floating point included
    q = (torch.round(scaled) if mode == "round" else torch.floor(scaled)) / 255
    return ball.apply_delta(x, q - x, eps)
