"""Embedded models are data: a name -> an open_clip ``local-dir`` folder shipped inside the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

EMBEDDED = {
    "tiny-fmnist": {
        "dir": "tiny-fmnist",
        "description": "tiny open_clip ViT (28 px, patch 7) trained by counterclip's recipe on Fashion-MNIST",
    },
}
DEFAULT_MODEL = "tiny-fmnist"


def embedded_dir(name: str) -> Path:
    return Path(str(resources.files("counterclip.models") / "weights" / EMBEDDED[name]["dir"]))


# Robust vision towers shipped as package data (fp16 safetensors under weights/robust/), trained by
# `counterclip finetune --preset toy` and exported with counterclip.finetune.export.ship_tower. A name here is
# accepted wherever a --vision-checkpoint path is.
ROBUST_TOWERS: dict[str, dict] = {
    f"tiny-fmnist-{method}": {
        "base": "tiny-fmnist", "file": f"tiny-fmnist-{method}.safetensors", "method": method,
        "description": f"tiny-fmnist's tower after 1 epoch of {label} at 4/255 on Fashion-MNIST classes 0-4",
        "command": f"counterclip finetune --method {method} --preset toy --eval-limit 1000 --output DIR",
    }
    for method, label in (("tecoa", "TeCoA"), ("pmg-aft", "PMG-AFT"), ("fare", "FARE"))
}


def robust_tower_path(value, model: str | None = None):
    """``value`` itself, or the packaged file behind a shipped tower's name (checked against ``model``)."""
    if value is None or str(value) not in ROBUST_TOWERS:
        return value
    from ..errors import CounterclipError

    info = ROBUST_TOWERS[str(value)]
    if model is not None and model != info["base"]:
        raise CounterclipError(f"--vision-checkpoint {value} is a tower of {info['base']}, not of {model}")
    path = Path(str(resources.files("counterclip.models") / "weights" / "robust" / info["file"]))
    if not path.is_file():
        raise CounterclipError(f"the packaged tower {value} is missing ({path}); reinstall counterclip or retrain "
                               f"it: {info['command']}")
    return str(path)
