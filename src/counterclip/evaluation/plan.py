"""The plan: which cells one dataset runs, in which order. Every ordering rule lives here.

* Clean records first (the ``none`` attack), then the oblivious attacks by budget, **Square after the white-box
  attacks** whatever the listed order (its black-box-beats-white-box check compares with their results).
* Adaptive cells after every oblivious one: per budget, per defense, the adaptive attacks its self-description
  calls for (``describe.adaptive_attacks_for``), then AutoAttack through each of its gradient modes. **A gate
  attack extends the oblivious PGD point** of its budget, which is planned (and cached) before it.
* An attack that needs more classes than the task has is left out, with one line saying so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..budgets import parse_eps
from . import composite
from .describe import GATE_ATTACKS, adaptive_attacks_for
from .describe import wanted as adaptive_wanted

COMPOSED = ("autoattack", "aa-paper")  # attacks that also run through every defense's gradient modes


@dataclass(frozen=True)
class Cell:
    """One attack at one budget. Oblivious: made once on the undefended classifier and classified by each of
    ``defenses``. Adaptive: made through ``defenses[0]`` (in its gradient ``mode`` for a composed attack)."""

    attack: str  # the attack's registered word (or plugin path); "none": the clean inputs
    eps: float
    threat: str = "oblivious"
    defenses: tuple = ()
    mode: str | None = None  # adaptive: the defense's differentiable mode a composed attack goes through
    extends: str | None = None  # adaptive: the oblivious attack whose point it takes as a candidate


@dataclass
class Plan:
    cells: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (attack, why)


def budgets_of(cfg, attack: str) -> list[float]:
    """The budgets ``attack`` runs at (``attack_eps`` restricts some: the paper preset's aa-paper at 4/255)."""
    allowed = (cfg.attack_eps or {}).get(attack)
    eps = sorted({parse_eps(e) for e in cfg.eps})
    return [e for e in eps if allowed is None or e in [parse_eps(v) for v in allowed]]


def plan_dataset(cfg, defenses: dict, num_classes: int) -> Plan:
    plan = Plan()
    names = list(defenses)
    if "none" in cfg.attacks:
        plan.cells.append(Cell("none", 0.0, "oblivious", tuple(names)))
    oblivious = []
    for a in [a for a in cfg.attacks if a != "none"]:
        need = composite.min_classes(a)
        if need > num_classes:
            plan.skipped.append((a, f"needs at least {need} classes, this task has {num_classes}"))
            continue
        seen = cfg.threat_model in ("oblivious", "both")
        for e in budgets_of(cfg, a):  # the undefended row is an oblivious record under every threat model
            oblivious.append(Cell(a, e, "oblivious", tuple(d for d in names if seen or d == "none")))
    oblivious.sort(key=lambda c: c.attack == "square")  # stable: the listed order otherwise
    plan.cells += oblivious
    if cfg.threat_model in ("adaptive", "both") and any(a != "none" for a in cfg.attacks):
        for e in sorted({parse_eps(e) for e in cfg.eps}):
            for d, defense in defenses.items():
                for an in adaptive_attacks_for(defense):  # read from the defense's self-description
                    if adaptive_wanted(an, cfg.adaptive_attacks):
                        plan.cells.append(Cell(an, e, "adaptive", (d,),
                                               extends="pgd" if an in GATE_ATTACKS else None))
                if d == "none":
                    continue
                for an in [a for a in cfg.attacks if a in COMPOSED and e in budgets_of(cfg, a)]:
                    for mode in (getattr(defense, "differentiable_modes", ()) or ("bpda",)):
                        plan.cells.append(Cell(an, e, "adaptive", (d,), mode=mode))
    return plan


class Through:
    """A composed attack as its adaptive records name it (``autoattack-full``): the attack itself runs on a
    ``Defended`` target like any other; this only says, in its config, which gradient mode it went through."""

    def __init__(self, attack, mode: str):
        self.attack, self.mode, self.eps = attack, mode, attack.eps
        self.name = f"{attack.name}-{mode}"

    def component_names(self, num_classes=None):
        return self.attack.component_names(num_classes)

    def config(self) -> dict:
        return {**self.attack.config(), "name": self.name, "mode": self.mode, "threat_model": "adaptive"}
