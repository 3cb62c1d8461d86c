"""Robust finetuned vision towers (TeCoA / PMG-AFT / FARE formats), loaded strictly and never unpickled."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CounterclipError

_WRAPPER_KEYS = ("vision_encoder_state_dict", "state_dict", "model_state_dict", "model")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a torch checkpoint, read with ``weights_only=True``.

    A checkpoint that needs arbitrary code to unpickle is refused, with the reason."""
    path = Path(path)
    if not path.is_file():
        raise CounterclipError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends: a reason, not a traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CounterclipError(
            f"refusing to load {path}: it is not a plain tensor checkpoint (weights_only=True failed: {first}). "
            "counterclip never unpickles code from a checkpoint; re-save it as a state dict or safetensors") from None
    return obj


def extract_vision_state_dict(obj) -> dict[str, torch.Tensor]:
    """The vision tower's state dict from the formats robust CLIP checkpoints use.

    TeCoA / PMG-AFT save ``{"vision_encoder_state_dict": ..., "epoch": ...}``; FARE saves the tower's raw state
    dict; DataParallel adds ``module.``; a full-model dict carries ``visual.``."""
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CounterclipError("checkpoint holds no vision state dict (expected a dict of tensors, or one under "
                               f"one of {', '.join(_WRAPPER_KEYS)})")
    sd = dict(obj)
    for prefix in ("module.", "visual.", "model.visual."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _key_summary(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_vision_checkpoint(visual: nn.Module, path: str | Path) -> None:
    """Load a robust vision tower into ``visual`` strictly: a mismatch names missing and unexpected keys."""
    sd = extract_vision_state_dict(read_state_dict(path))
    own = visual.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_key_summary(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_key_summary(unexpected)}")
        raise CounterclipError(f"vision checkpoint {path} does not match the model's vision tower; "
                               + "; ".join(parts))
    bad = [k for k in sd if sd[k].shape != own[k].shape]
    if bad:
        raise CounterclipError(f"vision checkpoint {path}: shape mismatch for "
                               + ", ".join(f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in bad[:8]))
    visual.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)
