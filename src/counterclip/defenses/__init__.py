"""Test-time defenses, one protocol: ``defense(classifier, x, generator=None) -> logits``.

``TTC`` (the paper's method), its baselines ``RandomNoise`` (RN), ``TTE``, ``AntiAdversary``, ``HedgeDefence``,
the peer test-time defenses ``RTPT``, ``CSR`` / ``CSRFull`` and ``MAC`` (``../shared/spec/peers.md``), and ``Defended(defense, classifier)``, a defended classifier that is an ``nn.Module``.
"""

from __future__ import annotations

from ..errors import UnknownNameError
from .anti_adversary import AntiAdversary
from .base import Defended, Defense, NoDefense
from .csr import CSR, CSRFull
from .hedge import HedgeDefence
from .mac import MAC
from .random_noise import RandomNoise
from .rtpt import RTPT
from .tte import TTE
from .ttc import TTC, step_weights

DEFENSES = {"none": NoDefense, "rn": RandomNoise, "ttc": TTC, "tte": TTE, "anti-adversary": AntiAdversary,
            "hedge": HedgeDefence, "csr": CSR, "csr-full": CSRFull, "mac": MAC,
            "rtpt": RTPT}

__all__ = ["TTC", "RandomNoise", "TTE", "AntiAdversary", "HedgeDefence", "Defended", "Defense", "NoDefense",
           "build_defense", "step_weights", "DEFENSES", "CSR", "CSRFull", "MAC", "RTPT"]


def build_defense(name: str, **params) -> Defense:
    """A defense by its CLI word (``DEFENSES``: none, rn, ttc, tte, anti-adversary, hedge, csr,
    csr-full, mac, ...) with keyword parameters."""
    key = name.lower()
    if key not in DEFENSES:
        raise UnknownNameError("defense", name, DEFENSES)
    return DEFENSES[key](**params)
