"""The attack contract: ``attack(classifier, x, y) -> x_adv``, untargeted, white-box, in [0,1] pixel space.

Attacks compute in fp32 by default, start from a random point (seedable through ``generator``, see
``counterclip.rng``), keep ``x_adv`` inside the eps-ball and [0,1], and never touch model weights: gradients are
taken with ``torch.autograd.grad`` w.r.t. the input only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import ball
from ..budgets import eps_str, parse_eps
from ..inputs import entry
from ..registry import Registry

NORMS = ball.NORMS


class Attack:
    name = "attack"
    # run-wide settings this attack's parameters take, when they differ by name: {parameter: setting}
    # (AutoAttack's ``steps`` is the run's ``aa_steps``); see ``run_settings_for``
    grid_knobs: dict = {}

    def __init__(self, eps, norm: str = "linf", generator=None, dtype=torch.float32):
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
        self.eps = parse_eps(eps, norm=norm)
        self.norm = norm
        self.generator = generator
        self.dtype = dtype

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor, generator=None) -> torch.Tensor:
        with entry(x, f"{type(self).__name__}(classifier, x, y)"):  # checked once; its steps are not
            x = x.detach().to(self.dtype)
            # eps = 0 runs the whole loop on purpose: the sanity suite checks that it returns x exactly
            gen = generator if generator is not None else self.generator
            with torch.enable_grad():
                x_adv = self.perturb(classifier, x, y.to(x.device), gen)
            return self.project(x_adv.detach(), x)

    def perturb(self, classifier, x, y, generator) -> torch.Tensor:
        raise NotImplementedError

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Into the eps-ball around x, then into [0,1]."""
        return ball.apply_delta(x, x_adv - x, self.eps, self.norm)

    def config(self) -> dict:
        return {"name": self.name, "eps": self.eps, "eps_str": eps_str(self.eps), "norm": self.norm}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def input_grad(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d loss / d x only; weights are frozen and never asked for."""
    (g,) = torch.autograd.grad(loss, x)
    return g


def query(classifier, x: torch.Tensor, generator, stream: str) -> torch.Tensor:
    """Logits of ``classifier``; a ``Defended`` target gets draws derived from the attack's generator (``stream``
    names them), so a randomised defense is seeded per sample as the attack is, never from the global RNG."""
    if getattr(classifier, "defense", None) is None:
        return classifier(x)
    from .adaptive import copy_generators

    return classifier(x, generator=copy_generators(generator, 1, stream))


def cw_margin_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = 50.0) -> torch.Tensor:
    """Per-sample ``-relu(z_y - max_{c != y} z_c + kappa)``: ascending it shrinks the true class's margin."""
    onehot = F.one_hot(y, logits.shape[-1]).bool()
    z_y = logits[onehot]
    z_other = logits.masked_fill(onehot, float("-inf")).amax(-1)
    return -F.relu(z_y - z_other + kappa)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein, 2020), per sample; needs >= 3 classes."""
    if logits.shape[-1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes (this task has {logits.shape[-1]}); "
                         "use APGD-CE for binary tasks")
    srt, ind = logits.sort(dim=1)
    top_is_y = (ind[:, -1] == y).float()
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_other = srt[:, -2] * top_is_y + srt[:, -1] * (1.0 - top_is_y)
    return -(z_y - z_other) / (srt[:, -1] - srt[:, -3] + 1e-12)


# every attack registers its CLI word(s) where it is defined; a user's ``pkg.mod:Cls`` resolves through the same
# registry (attacks are duck-typed: ``.eps``, ``.config()`` and the call, checked when built)
ATTACKS: Registry = Registry("attack")


def run_settings_for(cls, run: dict) -> dict:
    """The run-wide settings (``steps``, ``step_size``, ``queries``, ...) as ``cls``'s parameters take them."""
    out = dict(run)
    for param, setting in getattr(cls, "grid_knobs", {}).items():
        out[param] = run[setting]
    return out
