"""The one check on images handed to the public API: float pixels in [0,1], unnormalised.

Everything in counterclip (attacks, defenses, the model) works in [0,1] pixel space with the CLIP normalisation
inside the model. A uint8 tensor, 0-255 floats or already-normalised pixels run without any error and give
near-chance accuracy, so the public entry points (``ZeroShotClassifier``, ``Defense`` / ``Defended``, attacks,
``counterclip.evaluate``'s batches) check their input once per call with ``check_pixels``.

Only the outermost entry checks (``entry``): an attack calls the classifier and the defense many times per batch
on ``x + delta``, which it keeps in [0,1] itself, and a check there would add a device sync to every step of its
inner loop. One ``aminmax`` and one sync per public call is the whole cost.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch

from .errors import InputError

# rounding of x + delta after clamping, fp16 pixels and resampling can leave values a hair outside [0,1]
_TOLERANCE = 1e-3
_NORMALISED_MAX = 3.0
_state = threading.local()


def check_pixels(x, where: str):
    """``x`` unchanged when it holds float pixels in [0,1]; else one ``InputError`` naming ``where`` and the
    fix. One min/max reduction (one device sync) per call."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{where}: expected a float tensor of pixels in [0,1], got {type(x).__name__}")
    if not x.is_floating_point():
        fix = "x.float() / 255" if x.dtype == torch.uint8 else "x.float() (scaled into [0,1])"
        raise InputError(f"{where}: got a {str(x.dtype).replace('torch.', '')} tensor; pass float pixels in "
                         f"[0,1], e.g. {fix}")
    if x.numel() == 0:
        return x
    lo, hi = (float(v) for v in torch.stack(torch.aminmax(x.detach())).tolist())
    if lo != lo or hi != hi:
        raise InputError(f"{where}: the images hold NaN")
    # CLIP's mean/std maps [0,1] onto about [-1.8, 2.2]: a bright image normalised has no negative pixel
    if lo < -_TOLERANCE or 1 + _TOLERANCE < hi <= _NORMALISED_MAX:
        shown = f"down to {lo:.3g}" if lo < -_TOLERANCE else f"up to {hi:.3g}"
        raise InputError(f"{where}: pixels go {shown}: these look normalised (mean/std subtracted); pass the "
                         "raw [0,1] pixels (e.g. transforms.ToTensor() without Normalize): the model normalises "
                         "inside")
    if hi > 1 + _TOLERANCE:
        hint = "divide by 255" if hi <= 255 + _TOLERANCE else "scale them into [0,1]"
        raise InputError(f"{where}: pixels go up to {hi:.4g}: these look like 0-255 values; pass float pixels in "
                         f"[0,1] ({hint})")
    return x


@contextmanager
def entry(x, where: str):
    """Check ``x`` when this is the outermost public call on this thread; calls nested inside it (an attack's
    steps, a defense's classifier passes) are not checked again."""
    depth = getattr(_state, "depth", 0)
    if depth == 0:
        check_pixels(x, where)
    _state.depth = depth + 1
    try:
        yield
    finally:
        _state.depth = depth
