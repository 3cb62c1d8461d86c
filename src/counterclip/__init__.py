"""counterclip: test-time counterattacks (TTC) and honest zero-shot adversarial robustness for CLIP."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load_model", "list_models", "ZeroShotClassifier", "ClipModel", "get_dataset", "parse_eps", "evaluate",
           "finetune", "__version__"]


def __getattr__(name):  # light import: `counterclip --help` need not import torch
    if name in ("load_model", "list_models", "ClipModel"):
        from . import models

        return getattr(models, name)
    if name == "ZeroShotClassifier":
        from .zeroshot import ZeroShotClassifier

        return ZeroShotClassifier
    if name == "get_dataset":
        from .data import get_dataset

        return get_dataset
    if name == "evaluate":
        from .api import evaluate

        return evaluate
    if name == "finetune":  # the package is callable: counterclip.finetune(output, method=..., ...)
        import importlib

        return importlib.import_module(".finetune", __name__)
    if name == "parse_eps":
        from .budgets import parse_eps

        return parse_eps
    raise AttributeError(f"module 'counterclip' has no attribute {name!r}")
