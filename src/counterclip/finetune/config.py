"""One fine-tuning run's settings: the preset's recipe for the method, overridden by what the caller gave. The
result is a flat dict of primitives: it is recorded in the checkpoint and ``finetune.json`` as it is, and the
part that decides the weights keys the resume state."""

from __future__ import annotations

import hashlib
import json

from ..budgets import parse_eps, whole_number
from ..data import check_interpolation
from ..errors import CounterclipError, UnknownNameError
from .checkpoint import FORMATS
from .methods import resolve_method
from .presets import preset_settings

SELECT = ("last", "heldout")
OPTIMIZERS = ("sgd", "adamw")

DEFAULTS = {
    "reference": False, "variant": None, "kl_direction": None, "clean_weight": None, "trades": None,
    "vision_checkpoint": None, "data_root": None, "download": False, "limit": None, "max_steps": None,
    "last_n_params": None, "seed": 0, "device": "cpu", "format": "tecoa", "save_every": 50, "select": "last",
    "eval_limit": 512, "eval_eps": "4/255", "eval_steps": 10, "eval_step_size": "1/255", "weights_only": False,
    "tecoa_compat_keys": False, "image_size": None, "resize": None, "overwrite": False,
    "threads": None, "interpolation": "bilinear", "refine_names": False,
}
METHOD_OPTIONS = ("variant", "kl_direction", "clean_weight", "trades")  # None: the method's own default
# settings that do not change the trained weights: a re-run may change them and still resume
NOT_IN_KEY = ("output", "device", "save_every", "overwrite", "format", "weights_only", "tecoa_compat_keys",
              "threads", "eval_limit", "eval_eps", "eval_steps", "eval_step_size", "download", "data_root")
# settings added after runs were started: at these values they are left out of the resume key, so a run begun
# before they existed (which trained with exactly these values) still resumes
KEY_ONLY_IF_NOT = {"interpolation": "bilinear", "refine_names": False}


def resolve(output, method: str = "tecoa", preset: str = "toy", **given) -> dict:
    method = resolve_method(method)
    settings = {**DEFAULTS, **preset_settings(preset, method)}
    unknown = sorted(set(given) - set(settings) - {"classes"})
    if unknown:
        raise CounterclipError(f"finetune takes no setting {', '.join(unknown)}; valid: "
                               f"{', '.join(sorted(set(settings) | {'classes'}))}")
    settings.update({k: v for k, v in given.items() if v is not None})
    cfg = {"output": str(output), "method": method, "preset": preset, **settings}
    for key in ("eps", "step_size", "eval_eps", "eval_step_size"):
        cfg[key] = float(parse_eps(cfg[key]))
    for key, low in (("steps", 0), ("batch_size", 1), ("epochs", 1), ("seed", 0), ("save_every", 1),
                     ("eval_steps", 0), ("eval_limit", 0)):
        cfg[key] = whole_number(f"--{key.replace('_', '-')}", cfg[key], low)
    for key in ("limit", "max_steps", "last_n_params"):
        if cfg[key] is not None:
            cfg[key] = whole_number(f"--{key.replace('_', '-')}", cfg[key], 1)
    cfg["lr"], cfg["momentum"] = float(cfg["lr"]), float(cfg["momentum"])
    if cfg["optimizer"] not in OPTIMIZERS:
        raise UnknownNameError("optimizer", cfg["optimizer"], OPTIMIZERS)
    if cfg["format"] not in FORMATS:
        raise UnknownNameError("checkpoint format", cfg["format"], FORMATS)
    check_interpolation(cfg["interpolation"])
    cfg["refine_names"] = bool(cfg["refine_names"])
    if cfg["select"] not in SELECT:
        raise UnknownNameError("selection", cfg["select"], SELECT)
    if cfg["select"] == "heldout" and cfg["eval_limit"] == 0:
        raise CounterclipError("--select heldout needs the held-out evaluation (--eval-limit above 0)")
    return cfg


def resume_key(cfg: dict) -> str:
    kept = {k: v for k, v in sorted(cfg.items())
            if k not in NOT_IN_KEY and not (k in KEY_ONLY_IF_NOT and v == KEY_ONLY_IF_NOT[k])}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]
