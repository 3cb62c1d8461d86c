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
