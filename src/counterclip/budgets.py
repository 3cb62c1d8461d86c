"""One parser for perturbation budgets: floats or strings like ``"1/255"`` everywhere."""

from __future__ import annotations

from fractions import Fraction

from .errors import InputError


def _number(value) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"cannot read budget {value!r}: use a number like 0.0157 or a fraction like 4/255") from None


def parse_eps(value, name: str = "eps", norm: str = "linf") -> float:
    """``4/255``, ``"4/255"``, ``"0.0157"``, ``0.0157`` -> float in pixel units ([0,1] images).

    Every budget and step size (CLI flags, ``--attack-arg`` / ``--defense-arg`` values, constructors) is read
    here, so the one check that catches a budget given in 0-255 units (``eps=4``, which would perturb every
    pixel across its whole range and still produce plausible-looking numbers) lives here too. An L∞ budget
    above 1 cannot mean anything; an L2 budget (``norm="l2"``) can, so only its sign is checked."""
    eps = _number(value)
    if not eps >= 0 or eps != eps or eps == float("inf"):
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    if eps > 1 and norm == "linf":
        raise InputError(f"{name}={value} is above 1: budgets are in [0,1] pixel units; did you mean "
                         f"{eps:g}/255?")
    return eps


def whole_number(name: str, value, minimum: int = 0) -> int:
    """``value`` as an int when it is a whole number >= ``minimum`` (steps, draws, views, queries), else one
    ValueError that names ``name``."""
    try:
        ok = int(value) == value and value >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def eps_str(value) -> str:
    """A readable form: ``"4/255"`` when the budget is a whole number of 1/255 steps, else the decimal."""
    eps = _number(value)  # a record's L2 budget may be above 1: shown, not checked
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{eps:g}"


def parse_list(text: str, parse=str) -> list:
    """Comma lists everywhere on the CLI: ``"1/255,4/255"`` -> [..]."""
    return [parse(t.strip()) for t in str(text).split(",") if t.strip()]
