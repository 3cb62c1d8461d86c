"""White-box attacks in [0,1] pixel space: ``attack(classifier, x, y) -> x_adv``."""

from __future__ import annotations

from ..errors import UnknownNameError
from .base import Attack, cw_margin_loss, dlr_loss
from .pgd import CW, PGD, auto_step_size

__all__ = ["Attack", "PGD", "CW", "APGD", "build_attack", "ATTACKS", "cw_margin_loss", "dlr_loss",
           "auto_step_size", "EOTPGD", "TauAwarePGD", "build_adaptive", "APGDT", "FAB", "Square", "AutoAttack"]

ATTACKS = ("pgd", "cw", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "fab", "square", "autoattack", "aa-paper")


def __getattr__(name):
    if name in ("APGD", "APGDT"):
        from . import apgd

        return getattr(apgd, name)
    if name == "FAB":
        from .fab import FAB

        return FAB
    if name == "Square":
        from .square import Square

        return Square
    if name == "AutoAttack":
        from .autoattack import AutoAttack

        return AutoAttack
    if name in ("EOTPGD", "TauAwarePGD", "build_adaptive"):
        from . import adaptive

        return getattr(adaptive, name)
    raise AttributeError(name)


def attack_arg_kwargs(name: str, args: dict) -> dict:
    """``--attack-arg NAME.key=value`` as ``build_attack`` keywords: AutoAttack's own ``steps`` and ``version``
    are ``aa_steps`` and ``aa_version`` there (its ``steps`` would be taken as the grid's ``--steps``)."""
    if name.lower() in ("autoattack", "aa-paper"):
        return {{"steps": "aa_steps", "version": "aa_version"}.get(k, k): v for k, v in args.items()}
    return dict(args)


def build_attack(name: str, eps, steps: int = 10, step_size=1 / 255, norm: str = "linf", generator=None,
                 queries: int = 5000, aa_version: str = "standard", aa_steps: int = 100, **kw) -> Attack:
    """An attack by its CLI word: pgd, cw, apgd-ce, apgd-dlr, apgd-t, fab-t, fab, square (``queries``), autoattack
    (``aa_version``, ``aa_steps`` iterations for its APGD/FAB parts, ``queries`` for its Square), aa-paper
    (= autoattack version "paper")."""
    key = name.lower()
    if key == "apgd-t":
        from .apgd import APGDT

        return APGDT(eps, steps=steps, norm=norm, generator=generator, **kw)
    if key in ("fab-t", "fab"):
        from .fab import FAB

        return FAB(eps, steps=steps, targeted=key == "fab-t", norm=norm, generator=generator, **kw)
    if key == "square":
        from .square import Square

        return Square(eps, queries=queries, norm=norm, generator=generator, **kw)
    if key in ("autoattack", "aa-paper"):
        from .autoattack import AutoAttack

        return AutoAttack(eps, version="paper" if key == "aa-paper" else aa_version, steps=aa_steps,
                          queries=queries, norm=norm, generator=generator, **kw)
    if key == "pgd":
        return PGD(eps, steps=steps, step_size=step_size, norm=norm, generator=generator, **kw)
    if key == "cw":
        return PGD(eps, steps=steps, step_size=step_size, norm=norm, loss="cw", generator=generator, **kw)
    if key in ("apgd-ce", "apgd-dlr"):
        from .apgd import APGD

        return APGD(eps, steps=steps, norm=norm, loss=key.split("-")[1], generator=generator, **kw)
    raise UnknownNameError("attack", name, ATTACKS)
