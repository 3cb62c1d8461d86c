"""Test-time defenses, one protocol: ``defense(classifier, x, generator=None) -> logits``.

``TTC`` (the paper's method), its baselines ``RandomNoise`` (RN), ``TTE``, ``AntiAdversary``, ``HedgeDefence``,
and ``Defended(defense, classifier)``, a defended classifier that is an ``nn.Module``.
"""

from __future__ import annotations

from ..errors import UnknownNameError
from .anti_adversary import AntiAdversary
from .base import Defended, Defense, NoDefense
from .hedge import HedgeDefence
from .random_noise import RandomNoise
from .tte import TTE
from .ttc import TTC, step_weights

DEFENSES = {"none": NoDefense, "rn": RandomNoise, "ttc": TTC, "tte": TTE, "anti-adversary": AntiAdversary,
            "hedge": HedgeDefence}

__all__ = ["TTC", "RandomNoise", "TTE", "AntiAdversary", "HedgeDefence", "Defended", "Defense", "NoDefense",
           "build_defense", "step_weights", "DEFENSES"]


def build_defense(name: str, **params) -> Defense:
    """A defense by its CLI word (none, rn, ttc, tte, anti-adversary, hedge) with keyword parameters."""
    key = name.lower()
    if key not in DEFENSES:
        raise UnknownNameError("defense", name, DEFENSES)
    return DEFENSES[key](**params)
