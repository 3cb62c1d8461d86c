"""Every output the grid scores is checked where it enters the grid, for built-in and user code alike.

* logits from a classifier or defense: shape ``(B, C)``, a floating dtype, finite;
* adversarial inputs from an attack: shape of the clean batch, finite, inside [0,1] and inside the attack's
  eps-ball (L_inf or L2), up to the rounding of the dtype the attack returned;
* gate scores: shape ``(B,)``, finite.

The checks run once per batch, vectorised, with one host synchronisation when everything is valid.

``--on-invalid fail`` (the default) raises ``InvalidOutput``: the cell fails in one line and writes no record.
``--on-invalid skip`` records per sample which checks failed (a bit per check, the chunk's ``invalid`` codes);
those samples count as wrong, and the record carries an ``invalid`` count and a failed ``valid_outputs`` sanity
check. A chunk with invalid samples is saved only in ``skip`` mode; a later ``fail`` run that finds one fails the
cell with the same line instead of reusing it (``settle``), and never reuses a record that counts them.
"""

from __future__ import annotations

import contextlib
import math

import torch

from ..errors import CounterclipError

MODES = ("fail", "skip")

# (check, whose output, what a violation means); a check's bit in the codes is 1 << its position
CHECKS = (
    ("logits shape", "defense", "logits must be a tensor of shape (B, C)"),
    ("logits dtype", "defense", "logits must be floating point"),
    ("finite logits", "defense", "logits must be finite (no NaN or inf)"),
    ("input shape", "attack", "adversarial inputs must have the clean batch's shape"),
    ("finite inputs", "attack", "adversarial inputs must be finite (no NaN or inf)"),
    ("[0,1] box", "attack", "adversarial pixels must lie in [0, 1]"),
    ("eps-ball", "attack", "adversarial inputs must lie in the eps-ball around the clean image"),
    ("gate score shape", "gate", "gate scores must be a tensor of shape (B,)"),
    ("finite gate scores", "gate", "gate scores must be finite (no NaN or inf)"),
)
BIT = {name: 1 << i for i, (name, _, _) in enumerate(CHECKS)}
# a chunk saved before outputs were checked: not counted invalid, but its record says it was not checked
UNCHECKED = 1 << 14
ENABLED = True  # benchmarks/grid_validation.py switches the checks off to measure what they cost


class InvalidOutput(CounterclipError):
    """A method's output failed a check: the cell is not recorded (``--on-invalid skip`` records it marked)."""

    def __init__(self, method: str, check: str, count: int, first: int, message: str):
        self.method, self.check, self.count, self.first = method, check, count, first
        super().__init__(message)

    def __reduce__(self):  # all_gather_object pickles a peer rank's failure
        return type(self), (self.method, self.check, self.count, self.first, str(self))


class FailedCells(CounterclipError):
    """Raised by ``counterclip.evaluate`` after a run in which cells failed; the other records were written."""

    def __init__(self, failures: list[str], written: list):
        self.failures, self.written = failures, written
        super().__init__(f"{len(failures)} cell(s) failed their output checks and have no record "
                         f"({len(written)} written); first: {failures[0]}")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        from ..errors import UnknownNameError

        raise UnknownNameError("--on-invalid mode", mode, MODES)
    return mode


def method_of(obj, fallback: str) -> str:
    """The name a user gave a method on the command line (a plugin's import path), else its own name."""
    return getattr(obj, "plugin_name", None) or getattr(obj, "name", None) or fallback


# -- the checks: per-sample codes on the batch's device ---------------------------------------------------------

def _tol(t: torch.Tensor) -> float:
    # values in [0,1] round by at most one unit in the last place of the dtype the attack returned
    return 2 * torch.finfo(t.dtype).eps if t.is_floating_point() else 0.0


def logits_codes(logits, batch: int, num_classes: int) -> tuple[torch.Tensor, str]:
    """(per-sample codes [B], what was wrong) for a classifier's or defense's logits."""
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (batch, num_classes):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        return _all(batch, "logits shape", logits), f"got {got}, expected ({batch}, {num_classes})"
    if not logits.is_floating_point():
        return _all(batch, "logits dtype", logits), f"got {logits.dtype}"
    bad = ~torch.isfinite(logits).all(-1)
    codes = bad.to(torch.int32) * BIT["finite logits"]
    return codes, "NaN or inf among them"


def adversarial_codes(x: torch.Tensor, x_adv, eps: float, norm: str = "linf"):
    """(codes [B], what was wrong) for an attack's output against the clean batch ``x``."""
    batch = len(x)
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        got = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
        return _all(batch, "input shape", x_adv if isinstance(x_adv, torch.Tensor) else x), \
            f"got {got}, expected {tuple(x.shape)}"
    tol = _tol(x_adv)
    a = x_adv.detach().flatten(1).float()
    hi, lo = a.amax(1), a.amin(1)  # NaN propagates through both, +inf shows in hi and -inf in lo
    finite = torch.isfinite(hi) & torch.isfinite(lo)
    d = a - x.detach().flatten(1).to(a.device, torch.float32)
    if norm == "l2":
        size = d.norm(dim=1)
        over = size > eps * (1 + 1e-5) + tol * math.sqrt(d.shape[1])
    else:
        size = d.abs().amax(1)
        over = size > eps + tol
    box = (lo < -tol) | (hi > 1 + tol)
    codes = ((~finite).to(torch.int32) * BIT["finite inputs"] + (finite & box).to(torch.int32) * BIT["[0,1] box"]
             + (finite & over).to(torch.int32) * BIT["eps-ball"])

    def detail():  # only for a failing batch: a valid one synchronises once, in BatchCheck
        if not bool(finite.any()):
            return "no sample is finite"
        return (f"pixels in [{float(lo[finite].min()):.4g}, {float(hi[finite].max()):.4g}], largest "
                f"{'L2' if norm == 'l2' else 'L_inf'} perturbation {float(size[finite].max()):.4g} for eps {eps:.4g}")
    return codes, detail


def gate_codes(score, batch: int) -> tuple[torch.Tensor, str]:
    if not isinstance(score, torch.Tensor) or tuple(score.shape) != (batch,):
        got = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__
        return _all(batch, "gate score shape", score), f"got {got}, expected ({batch},)"
    return (~torch.isfinite(score.float())).to(torch.int32) * BIT["finite gate scores"], "NaN or inf among them"


def _all(batch: int, check: str, like) -> torch.Tensor:
    dev = like.device if isinstance(like, torch.Tensor) else "cpu"
    return torch.full((batch,), BIT[check], dtype=torch.int32, device=dev)


def draws_differ(a, b) -> bool | None:
    """The randomness probe's evidence: True when two passes give finite logits of one shape that differ, False
    when they agree, None when either is not finite logits (garbage differs too, and proves nothing)."""
    ok = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and a.ndim == 2
          and a.is_floating_point() and b.is_floating_point() and bool(torch.isfinite(a).all())
          and bool(torch.isfinite(b).all()))
    return (not torch.allclose(a, b)) if ok else None


def first_check(codes: torch.Tensor) -> str:
    """The first failed check named by ``codes`` (which has at least one set bit)."""
    union = 0
    for v in codes.unique().tolist():
        union |= int(v)
    return next(name for name, _, _ in CHECKS if union & BIT[name])


def _error(method, codes: torch.Tensor, idx, detail: str, where: str) -> InvalidOutput:
    """``method``: the name, or {"attack": name, "defense": name} for a cell with both."""
    check = first_check(codes)
    bad = (codes.cpu() & BIT[check]) != 0
    count, first = int(bad.sum()), int(torch.as_tensor(idx)[bad.nonzero()[0, 0]])
    whose = dict((c, w) for c, w, _ in CHECKS)[check]
    if isinstance(method, dict):
        method = method.get("defense" if whose == "gate" else whose) or next(iter(method.values()))
    subject = f"the gate of defense {method}" if whose == "gate" else f"{whose} {method}"
    msg = (f"{where + ': ' if where else ''}{subject} failed the {check} check on {count} of {len(codes)} "
           f"samples (first: dataset index {first}){'; ' + detail if detail else ''}; the cell has no record "
           "(--on-invalid skip records it with these samples counted wrong)")
    return InvalidOutput(method, check, count, first, msg)


# -- the grid's side: one BatchCheck per computed chunk ---------------------------------------------------------

class BatchCheck:
    """Collects the checks of one batch: raises at the first violation (``fail``) or records it (``skip``)."""

    def __init__(self, mode: str, idx, num_classes: int | None = None, where: str = ""):
        self.mode, self.idx, self.num_classes, self.where = mode, idx, num_classes, where
        self.codes = torch.zeros(len(idx), dtype=torch.int32)

    def _take(self, method: str, found: tuple) -> torch.Tensor | None:
        """The bad-sample mask (on the output's device) or None when every sample is valid."""
        codes, detail = found
        if not ENABLED or not bool(codes.any()):  # the one synchronisation of a valid batch
            return None
        if self.mode == "fail":
            raise _error(method, codes, self.idx, detail() if callable(detail) else detail, self.where)
        self.codes |= codes.cpu()
        return codes != 0

    def logits(self, method: str, logits) -> None:
        if ENABLED:
            self._take(method, logits_codes(logits, len(self.idx), self.num_classes))

    def adversarial(self, method: str, x: torch.Tensor, x_adv, eps: float, norm: str = "linf") -> torch.Tensor:
        """``x_adv``, with invalid samples replaced by their clean image in ``skip`` mode (they count as wrong
        whatever the defense says, and no defense is blamed for an attack's NaN)."""
        if not ENABLED:
            return x_adv
        bad = self._take(method, adversarial_codes(x, x_adv, eps, norm))
        if bad is None:
            return x_adv
        if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
            return x.clone()
        view = bad.view(-1, *([1] * (x.ndim - 1)))
        return torch.where(view, x.to(x_adv.dtype), x_adv)

    def gate(self, method: str, score):
        """The gate score, invalid samples as NaN (a NaN score passes no gate) in ``skip`` mode."""
        if not ENABLED:
            return score
        bad = self._take(method, gate_codes(score, len(self.idx)))
        if bad is None:
            return score
        if not isinstance(score, torch.Tensor) or tuple(score.shape) != (len(self.idx),):
            return torch.full((len(self.idx),), float("nan"))
        return score.float().masked_fill(bad.to(score.device), float("nan"))

    def carry(self, chunk: dict) -> None:
        """The codes of the chunk these inputs came from (an attack's invalid samples stay invalid)."""
        if "invalid" in chunk:
            self.codes |= chunk["invalid"].to(torch.int32) & ~UNCHECKED

    def correct(self, logits, y: torch.Tensor) -> torch.Tensor:
        """Per-sample correctness on CPU; all False when the logits cannot be read per sample."""
        if isinstance(logits, torch.Tensor) and logits.ndim == 2 and len(logits) == len(y):
            return logits.argmax(-1).cpu() == y.cpu()
        return torch.zeros(len(y), dtype=torch.bool)

    def finish(self, out: dict) -> dict:
        """The chunk's tensors with ``invalid`` codes; invalid samples count as wrong (and pass no gate)."""
        valid = self.codes == 0
        for k in ("correct", "gate_pass"):
            if k in out:
                out[k] = out[k] & valid
        if "draws" in out:
            out["draws"] = out["draws"] & valid[:, None]
        return {**out, "invalid": self.codes.to(torch.int16)}


def codes_of(chunk: dict, n: int) -> torch.Tensor:
    """A saved chunk's codes; one saved before the checks existed is marked unchecked."""
    got = chunk.get("invalid")
    return got if got is not None else torch.full((n,), UNCHECKED, dtype=torch.int16)


def invalid_mask(codes: torch.Tensor) -> torch.Tensor:
    return (codes.to(torch.int32) & ~UNCHECKED) != 0


def first_failure(failures: list) -> None:
    """Re-raise the first rank's failure on every rank (each rank gathered before raising, so none hangs)."""
    for f in failures:
        if f is not None:
            raise f


def settle(codes: torch.Tensor | None, mode: str, method, idx, where: str = "") -> None:
    """``fail`` mode: saved chunks with invalid samples (a ``skip`` run's) fail the cell as a fresh run would."""
    if mode == "fail" and codes is not None and bool(invalid_mask(codes).any()):
        c = codes.to(torch.int32) & ~UNCHECKED
        raise _error(method, c, idx, "found in chunks a --on-invalid skip run saved", where)


def reusable(record: dict, mode: str) -> bool:
    """A finished record is reused in ``fail`` mode only when it counts no invalid samples."""
    return mode != "fail" or not record.get("invalid")


def record_fields(codes: torch.Tensor | None, idx) -> tuple[int | None, dict | None]:
    """(the record's ``invalid`` count, its ``valid_outputs`` sanity check)."""
    from .sanity import check

    if codes is None:
        return None, None
    c = codes.to(torch.int32)
    bad = invalid_mask(c)
    n, count = len(c), int(bad.sum())
    if count:
        parts = []
        for name, whose, _ in CHECKS:
            hit = (c & BIT[name]) != 0
            if hit.any():
                parts.append(f"{whose}: {name} on {int(hit.sum())} (first: dataset index "
                             f"{int(torch.as_tensor(idx)[hit.nonzero()[0, 0]])})")
        return count, check(False, f"{count} of {n} samples had invalid outputs and are counted wrong "
                                   f"(--on-invalid skip): " + "; ".join(parts))
    unchecked = int(((c & UNCHECKED) != 0).sum())
    if unchecked:
        return 0, check(None, f"{unchecked} of {n} samples come from chunks saved before outputs were checked; "
                              "--overwrite checks them")
    return 0, check(True, f"all outputs of {n} samples passed the checks (logits (B, C) finite floating point; "
                          "adversarial inputs finite, in [0,1] and in the eps-ball; gate scores (B,) finite)")


@contextlib.contextmanager
def contained(failures: list, log):
    """A cell that fails its checks is logged in one line and listed; the run goes on with the next cell."""
    try:
        yield
    except InvalidOutput as e:
        failures.append(str(e))
        log(f"FAILED: {e}")
