"""Test-time defenses, one protocol: ``defense(classifier, x, generator=None) -> logits``.

``TTC`` (the paper's method), its baselines ``RandomNoise`` (RN), ``TTE``, ``AntiAdversary``, ``HedgeDefence``,
the peer test-time defenses ``RTPT``, ``CSR`` / ``CSRFull`` and ``MAC`` (``../shared/spec/peers.md``), and
``Defended(defense, classifier)``, a defended classifier that is an ``nn.Module``.

Each defense registers its CLI word in ``DEFENSES`` where it is defined; adding one is one new file plus its
import line below (the order of these lines is the order of ``--help``, the report and the docs).
"""

from __future__ import annotations

from .base import DEFENSES, Defended, Defense, NoDefense
from .random_noise import RandomNoise  # imports ttc (its base); rn is listed before it (before="ttc")
from .ttc import TTC, step_weights
from .tte import TTE
from .anti_adversary import AntiAdversary
from .hedge import HedgeDefence
from .csr import CSR, CSRFull
from .mac import MAC
from .rtpt import RTPT

__all__ = ["TTC", "RandomNoise", "TTE", "AntiAdversary", "HedgeDefence", "Defended", "Defense", "NoDefense",
           "build_defense", "step_weights", "DEFENSES", "CSR", "CSRFull", "MAC", "RTPT"]


def build_defense(name: str, **params) -> Defense:
    """A defense by its registered word (``DEFENSES.names()``) or ``pkg.module:ClassName``, with keyword
    parameters checked against its signature."""
    return DEFENSES.build(name, **params)
