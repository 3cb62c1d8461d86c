"""What the grid reads from a defense's self-description: which adaptive attacks apply, its gate, its cost.

No defense is named here. A defense says whether it is randomised / dynamic, which differentiable modes it
has, and whether it has a gate (``Defense.gate_score`` / ``gate_threshold`` / ``gate_purifies``); the attacks that
apply follow from that:

* ``eot-pgd`` (PGD through ``differentiable(mode="full")``, with EOT when randomised) when it has a "full" mode;
* ``bpda-pgd`` when it has a "bpda" mode and is dynamic (for a defense that does not optimise per input, BPDA
  and the full gradient are the same thing), and for a defense with no differentiable mode at all (generic BPDA:
  the whole defense is identity on the backward pass, as its records' ``gradient`` says);
* the gate-aware attack when it has a gate with a threshold (TTC names it ``tau-aware``, its records' name).
"""

from __future__ import annotations

import time

import torch

from ..cost import FIELDS, PassCounter
from ..defenses.base import gate_passes, has_gate, own_modes


def differentiable_modes(defense) -> tuple:
    return own_modes(defense)  # a defense written before the attribute existed may still override differentiable


def gate_attack_name(defense) -> str:
    return f"{getattr(defense, 'gate_name', 'gate')}-aware"


def gate_threshold(defense):
    """The defense's finite gate threshold, or None (no gate, gate off, or infinite)."""
    if not has_gate(defense):
        return None
    thr = defense.gate_threshold
    if thr is None or thr != thr or abs(float(thr)) == float("inf"):
        return None
    return float(thr)


def adaptive_attacks_for(defense) -> list[str]:
    if getattr(defense, "name", None) == "none":
        return []
    modes = differentiable_modes(defense)
    out = []
    if "full" in modes:
        out.append("eot-pgd")
    if ("bpda" in modes and getattr(defense, "dynamic", False)) or not modes:
        # no gradient of its own: BPDA with the whole defense as identity (gradient_choice says so)
        out.append("bpda-pgd")
    if gate_threshold(defense) is not None:
        out.append(gate_attack_name(defense))
    return out


GATE_ATTACKS = ("gate-aware", "tau-aware")  # one attack: tau-aware is its name against TTC


def names_of(name: str) -> tuple:
    """Every name of the adaptive attack ``name`` (gate-aware and tau-aware are one attack)."""
    return GATE_ATTACKS if name in GATE_ATTACKS else (name,)


def wanted(name: str, selected) -> bool:
    """``--adaptive-attack`` filter, by any of the attack's names."""
    return selected is None or bool(set(names_of(name)) & set(selected))


def run_counted(defense, classifier, x, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, cost)``: the defense's fast path, with its encoder passes counted and its time measured;
    ``cost`` is a row [image fwd, image bwd, text fwd, text bwd, seconds, images] that sums over chunks."""
    t0 = time.perf_counter()
    with PassCounter() as c:
        logits = defense(classifier, x, generator=generator)
    dt = time.perf_counter() - t0
    row = [float(getattr(c, k)) for k in FIELDS] + [dt, float(len(x))]
    return logits, torch.tensor([row], dtype=torch.float64)


def cost_summary(rows: torch.Tensor | None) -> dict | None:
    """Per-image passes (measured by counting) and images/s (measured) from summed ``run_counted`` rows."""
    if rows is None or rows.numel() == 0:
        return None
    tot = rows.sum(0).tolist()
    n = tot[-1]
    if n <= 0:
        return None
    out = {f"{k}_per_image": round(tot[i] / n, 3) for i, k in enumerate(FIELDS)}
    out["images"] = int(n)
    out["seconds"] = round(tot[4], 3)
    out["images_per_s"] = round(n / tot[4], 2) if tot[4] > 0 else None
    out["how"] = ("encoder passes counted in the model layer during the defense's fast path (counterclip.cost); "
                  "time measured on the chunks computed in this run")
    return out


@torch.no_grad()
def gate_pass(defense, classifier, x, generator, check=None) -> torch.Tensor | None:
    """Per sample: the gate lets the input through unpurified (None for an ungated defense). ``check``
    (evaluation/validate.py) sees the gate score first."""
    thr = gate_threshold(defense)
    if thr is None:
        return None
    score = defense.gate_score(classifier, x, generator)
    if check is not None:
        score = check(score)
    return gate_passes(defense, score.float(), thr).cpu()


def gate_summary(defense, clean_pass, adv_pass) -> dict | None:
    thr = gate_threshold(defense)
    if thr is None:
        return None
    out = {"score": getattr(defense, "gate_label", None) or getattr(defense, "gate_name", "gate"), "threshold": thr, "purifies": defense.gate_purifies}
    if clean_pass is not None and clean_pass.numel():
        out["clean_passes_frac"] = float(clean_pass.float().mean())
    if adv_pass is not None and adv_pass.numel():
        out["adv_passes_frac"] = float(adv_pass.float().mean())
    return out


def gradient_choice(defense, attack) -> str:
    """How an adaptive attack's gradient goes through ``defense`` (the straight-through / BPDA / EOT choices the
    defense documents), for its record."""
    if getattr(attack, "name", "") in GATE_ATTACKS:
        return (f"gate hinge on the defense's own gate score ({getattr(defense, 'gate_label', None) or 'gate_terms'}"
                f", purified {defense.gate_purifies} the threshold), differentiated directly; lambdas swept per "
                "image, best kept; EOT over the defense's randomness")
    mode = getattr(attack, "mode", "full")
    own = getattr(defense, "gradient_choices", {}) or {}
    if mode in own:
        return own[mode]
    if mode in differentiable_modes(defense):
        return f"the defense's {mode!r} mode (see its differentiable() docstring)"
    return "generic BPDA: the whole defense is identity on the backward pass"
