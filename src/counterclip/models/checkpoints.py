"""Robust finetuned vision towers (TeCoA / PMG-AFT / FARE formats), loaded strictly and never unpickled."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CounterclipError

# partial_state_dict: the TTC author's later code (keys ``visual.*``) beside an empty ``state_dict``
_WRAPPER_KEYS = ("vision_encoder_state_dict", "state_dict", "model_state_dict", "model", "partial_state_dict")


def allowed_globals() -> list:
    """The harmless non-tensor types released training checkpoints carry beside their weights (TeCoA / PMG-AFT /
    FARE ``.pth.tar``: epoch numbers, numpy scalars such as ``best_acc1``, the run's ``argparse.Namespace``),
    allowed on top of ``weights_only=True``. Nothing here can run code: numeric numpy dtypes only (no object
    dtype), a Namespace only gets attributes."""
    import argparse

    out: list = [argparse.Namespace]
    try:
        import numpy as np
    except ImportError:
        return out
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    out += [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype,
            (np.dtype, "numpy.dtype")]
    out += sorted({type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG"}, key=lambda t: t.__name__)
    return out


def checkpoint_allowlist():
    """Context manager: ``torch.load(weights_only=True)`` inside it also accepts ``allowed_globals()``."""
    return torch.serialization.safe_globals(allowed_globals())


def refusal_error(path: Path, e: Exception) -> CounterclipError:
    try:
        needs = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
                 if g not in _allowed_names()]
    except Exception:
        needs = []
    if needs:
        why = f"it needs {', '.join(needs[:6])}{' ...' if len(needs) > 6 else ''} to unpickle"
    else:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return CounterclipError(
        f"refusing to load {path}: it is not a plain tensor checkpoint (weights_only=True failed: {why}). "
        "counterclip never unpickles code from a checkpoint (allowed besides tensors: numbers, strings, "
        "containers, numpy scalars, argparse.Namespace); re-save its weights once, on a machine where you trust "
        f"the file: python -c \"import torch; c = torch.load('{path}', weights_only=False); "
        "torch.save(c.get('vision_encoder_state_dict', c.get('state_dict', c)) if isinstance(c, dict) else "
        "c.state_dict(), 'weights.pt')\" and pass weights.pt")


def _allowed_names() -> set[str]:
    names = set()
    for g in allowed_globals():
        if isinstance(g, tuple):
            names.add(g[1])
        else:
            names.add(f"{g.__module__}.{g.__qualname__}")
    return names


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file, a torch checkpoint read with ``weights_only=True`` (plus the
    ``allowed_globals`` allowlist), or a TorchScript archive read as data (``torchscript.py``).

    A checkpoint that needs arbitrary code to unpickle is refused, with the reason."""
    from .torchscript import is_torchscript_archive, read_torchscript_state_dict

    path = Path(path)
    if not path.is_file():
        raise CounterclipError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if is_torchscript_archive(path):
        return read_torchscript_state_dict(path)[0]
    try:
        with checkpoint_allowlist():
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends: a reason, not a traceback
        raise refusal_error(path, e) from None
    return obj


def extract_vision_state_dict(obj) -> dict[str, torch.Tensor]:
    """The vision tower's state dict from the formats robust CLIP checkpoints use.

    TeCoA / PMG-AFT save ``{"vision_encoder_state_dict": ..., "epoch": ...}``; FARE saves the tower's raw state
    dict; DataParallel adds ``module.``; a full-model dict carries ``visual.``. An empty wrapper dict (the
    reference files' ``state_dict: {}``) is skipped, not taken for the weights."""
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], dict) and obj[key]:
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CounterclipError("checkpoint holds no vision state dict (expected a dict of tensors, or one under "
                               f"one of {', '.join(_WRAPPER_KEYS)})")
    sd = dict(obj)
    for prefix in ("module.", "visual.", "model.visual."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    if any(k.startswith("visual.") for k in sd):  # a whole CLIP (text tower too): take its vision tower
        sd = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    return sd


def _key_summary(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_strict(module: nn.Module, sd: dict, what: str, target: str) -> None:
    """``module.load_state_dict(sd, strict=True)``, with a mismatch named in one line (missing / unexpected keys,
    shapes) instead of torch's multi-line error; values are cast to the module's dtypes."""
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_key_summary(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_key_summary(unexpected)}")
        raise CounterclipError(f"{what} does not match {target}; " + "; ".join(parts))
    bad = [k for k in sd if sd[k].shape != own[k].shape]
    if bad:
        raise CounterclipError(f"{what}: shape mismatch for "
                               + ", ".join(f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in bad[:8]))
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)


def load_vision_checkpoint(visual: nn.Module, path: str | Path) -> dict:
    """Load a robust vision tower into ``visual`` strictly: a mismatch names missing and unexpected keys.
    Returns the checkpoint's ``counterclip`` block (``counterclip finetune``'s record), or ``{}``."""
    obj = read_state_dict(path)
    sd = extract_vision_state_dict(obj)
    load_strict(visual, sd, f"vision checkpoint {path}", "the model's vision tower")
    meta = obj.get("counterclip") if isinstance(obj, dict) else None
    return meta if isinstance(meta, dict) else {}
