"""Adversarial fine-tuning of CLIP's vision tower: TeCoA, PMG-AFT and FARE (``shared/spec/finetune.md``).

``counterclip.finetune(output, method="tecoa", preset="toy", ...)`` runs it from Python; this package is also
that callable (a module subclass below), since importing ``counterclip.finetune.x`` binds the package, not a
function, to the ``finetune`` attribute of ``counterclip``."""

from __future__ import annotations

import sys
import types

from .methods import METHODS, build_method, resolve_method
from .presets import PRESETS
from .trainer import Trainer, finetune

__all__ = ["finetune", "Trainer", "METHODS", "PRESETS", "build_method", "resolve_method"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return finetune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
