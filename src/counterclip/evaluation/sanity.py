"""The sanity suite run with every evaluation (in the spirit of AutoAttack's checks): classic signs of a broken
evaluation are measured and written into each record's ``"sanity"``. A failing check never hides a number:
it marks it. Each check is ``{"passed": True | False | None, "detail": str}``; ``None`` is a note (e.g. the
defense is randomised), not a failure."""

from __future__ import annotations

import math

import torch

# beyond this many standard errors a rise in robust accuracy is not sampling noise
_NOISE_Z = 1.96


def check(passed, detail: str) -> dict:
    return {"passed": None if passed is None else bool(passed), "detail": detail}


def _noise(p: float, n: int) -> float:
    # two independent estimates: the difference's standard error is sqrt(2) * sqrt(p(1-p)/n); at least 1 sample
    return max(1.0 / max(n, 1), _NOISE_Z * math.sqrt(2 * max(p * (1 - p), 1.0 / max(n, 1)) / max(n, 1)))


def eps_zero(clean_pred: torch.Tensor, eps0_pred: torch.Tensor, y: torch.Tensor) -> dict:
    same = bool(torch.equal(clean_pred, eps0_pred))
    a, b = float((clean_pred == y).float().mean()), float((eps0_pred == y).float().mean())
    return check(same, f"attack with eps=0 on {len(y)} probe images: accuracy {b:.4f} vs clean {a:.4f}"
                 + ("" if same else " (an eps=0 attack changed predictions: the attack leaves the ball)"))


def monotone(name: str, acc_small: float, acc_large: float, n: int, small_label: str, large_label: str) -> dict:
    tol = _noise(acc_small, n)
    ok = acc_large <= acc_small + tol
    return check(ok, f"robust accuracy {acc_large:.4f} at {large_label} vs {acc_small:.4f} at {small_label} "
                     f"(noise allowance {tol:.4f})" + ("" if ok else f": it rises with {name}; the attack is "
                                                                    "unreliable (gradient masking or too few steps)"))


def collapse(robust_acc: float, eps_label: str, threshold: float = 0.2) -> dict:
    ok = robust_acc < threshold
    return check(ok, f"undefended robust accuracy {robust_acc:.4f} at the largest eps {eps_label}"
                 + ("" if ok else f" does not collapse below {threshold:.0%}: the attack may be too weak for this "
                                  "model, or the budget too small for it"))


def gradients(grad: torch.Tensor, what: str, min_fraction: float = 0.9) -> dict:
    g = grad.flatten(1)
    finite = torch.isfinite(g).all(1)
    nonzero = g.abs().sum(1) > 0
    frac = float((finite & nonzero).float().mean())
    ok = frac >= min_fraction
    return check(ok, f"input gradients of {what}: {frac:.0%} of {len(g)} probe images finite and non-zero"
                 + ("" if ok else " (zero or NaN gradients: gradient masking, the attack is blind)"))


def adaptive_vs_oblivious(adaptive_acc: float, oblivious_acc: float | None) -> dict:
    if oblivious_acc is None:
        return check(None, "no oblivious record for this defense and budget to compare with")
    ok = adaptive_acc <= oblivious_acc
    return check(ok, f"adaptive robust accuracy {adaptive_acc:.4f} vs oblivious {oblivious_acc:.4f}"
                 + ("" if ok else ": the adaptive attack is weaker than the oblivious one, so it is broken, "
                                  "not the defense strong"))


INVALID_DRAWS = ("its outputs on the probe images are not finite logits of one shape, so two draws prove neither "
                 "randomness nor determinism")


def randomness(defense, differs: bool | None) -> dict:
    """``differs``: two draws gave finite, different logits (None: they were not finite logits)."""
    notes = [INVALID_DRAWS] if differs is None else []
    if differs:
        notes.append("randomised: its prediction changed with the random seed on the probe images; robust "
                     "accuracy is one draw, attack it with EOT (adaptive threat model)")
    if getattr(defense, "dynamic", False):
        notes.append("dynamic: it optimises each input at test time; only an attack through the defense "
                     "(adaptive threat model) measures it")
    return check(None, "; ".join(notes) if notes else "deterministic and static")


# -- AutoAttack's flags (checks.py in the AutoAttack source is the model): a fired note has "fired": True --------

def note(fired: bool, detail: str) -> dict:
    return {"passed": None, "fired": bool(fired), "detail": detail}


def randomized(differs: bool | None) -> dict:
    if differs is None:
        return note(False, INVALID_DRAWS)
    return note(differs, "randomised: the prediction changed with the random draw on the probe images; use EOT "
                         "(--aa-version rand, adaptive attacks) and --eval-draws" if differs
                else "deterministic: the same prediction on every draw")


def dynamic(flag: bool, traced: bool) -> dict:
    why = [w for w, on in (("the defense says it optimises each input at test time", flag),
                           ("its forward pass computes gradients", traced)) if on]
    return note(bool(why), ("dynamic: " + " and ".join(why) + "; only an attack through the defense (adaptive "
                            "threat model) measures it") if why else "static: no gradient computed in its forward")


def zero_gradients(grad: torch.Tensor, what: str) -> dict:
    z = int((grad.flatten(1).abs().sum(1) == 0).sum())
    return check(z == 0, f"{z} of {len(grad)} probe images have an all-zero input gradient of {what}"
                 + (": gradient-based attacks are blind there (gradient masking)" if z else ""))


def output_range(logits: torch.Tensor, alpha: float = 1e-5) -> dict:
    probs = bool(logits.max() < 1 + alpha and logits.min() > -alpha
                 and ((logits.sum(-1) - 1).abs() < alpha).all())
    return check(not probs, "the attacked model's outputs are a probability distribution (softmax instead of "
                            "logits): losses on them saturate and attacks weaken" if probs
                 else "the attacked model's outputs are logits (not a probability distribution)")


def black_box_vs_white_box(square_acc: float, white_acc: float | None, n: int, what: str) -> dict:
    if white_acc is None:
        return check(None, "no white-box result on the same samples to compare Square with")
    tol = _noise(white_acc, n)
    ok = square_acc >= white_acc - tol
    return check(ok, f"Square {square_acc:.4f} vs best white-box {white_acc:.4f} ({what}; noise allowance "
                     f"{tol:.4f})" + ("" if ok else ": the black-box attack beats the white-box ones, so their "
                                                    "gradients are masked; the white-box numbers overstate "
                                                    "robustness"))
