"""One parser for perturbation budgets: floats or strings like ``"1/255"`` everywhere."""

from __future__ import annotations

from fractions import Fraction


def parse_eps(value) -> float:
    """``4/255``, ``"4/255"``, ``"0.0157"``, ``0.0157`` -> float in pixel units ([0,1] images)."""
    if isinstance(value, (int, float)):
        eps = float(value)
    else:
        text = str(value).strip()
        try:
            eps = float(Fraction(text)) if "/" in text else float(text)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"cannot read budget {value!r}: use a number like 0.0157 or a fraction like 4/255") from None
    if not eps >= 0 or eps != eps or eps == float("inf"):
        raise ValueError(f"budget must be a finite number >= 0, got {value!r}")
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
    eps = parse_eps(value)
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{eps:g}"


def parse_list(text: str, parse=str) -> list:
    """Comma lists everywhere on the CLI: ``"1/255,4/255"`` -> [..]."""
    return [parse(t.strip()) for t in str(text).split(",") if t.strip()]
