"""White-box attacks in [0,1] pixel space: ``attack(classifier, x, y) -> x_adv``.

Each attack registers its CLI word(s) in ``ATTACKS`` where it is defined; the import lines below give the
order of ``--help``, the report and the docs. Adaptive attacks (through a defense) are in ``ADAPTIVE``.
"""

from __future__ import annotations

from .base import ATTACKS, Attack, cw_margin_loss, dlr_loss, run_settings_for
from .pgd import CW, PGD, auto_step_size
from .apgd import APGD, APGDT
from .fab import FAB
from .square import Square
from .autoattack import AutoAttack
from .adaptive import ADAPTIVE, EOTPGD, TauAwarePGD, build_adaptive

__all__ = ["Attack", "PGD", "CW", "APGD", "build_attack", "ATTACKS", "ADAPTIVE", "cw_margin_loss", "dlr_loss",
           "auto_step_size", "make_attack", "EOTPGD", "TauAwarePGD", "build_adaptive", "APGDT", "FAB", "Square",
           "AutoAttack"]


def build_attack(name: str, eps, steps: int = 10, step_size=1 / 255, norm: str = "linf", generator=None,
                 queries: int = 5000, aa_version: str = "standard", aa_steps: int = 100, **kw) -> Attack:
    """An attack by its registered word (``ATTACKS.names()``) at budget ``eps``. The run-wide settings
    (``steps``, ``step_size``, ``norm``, ``queries``; AutoAttack's ``aa_version`` / ``aa_steps``) reach the
    attacks whose signature takes them; ``kw`` (e.g. ``--attack-arg``) are checked and win over them."""
    run = {"steps": steps, "step_size": step_size, "norm": norm, "generator": generator, "queries": queries,
           "aa_version": aa_version, "aa_steps": aa_steps}
    return make_attack(name, eps, run, kw)


def make_attack(name: str, eps, run: dict, args: dict) -> Attack:
    """``name`` at ``eps`` with the run-wide settings ``run`` where its signature takes them (by its
    ``grid_knobs``) and the user's ``args`` (checked) over them."""
    return ATTACKS.build(name, eps, offered=run_settings_for(ATTACKS.resolve(name), run), **args)
