"""``imagefolder``: a folder of class sub-folders (torchvision's ImageFolder); class names from folder names."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import CounterclipError


def _readable(path: str) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:
        return False


def build(data_root, transform):
    from torchvision.datasets import ImageFolder

    if data_root is None:
        raise CounterclipError("imagefolder needs --data-root DIR (a folder with one sub-folder per class)")
    root = Path(data_root)
    if not root.is_dir():
        raise CounterclipError(f"imagefolder: {root} is not a directory (expected one sub-folder per class)")
    try:
        ds = ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, RuntimeError) as e:
        raise CounterclipError(f"imagefolder: {e}") from None
    bad = [p for p, _ in ds.samples if not _readable(p)]
    if bad:
        warnings.warn(f"imagefolder: skipping {len(bad)} unreadable image(s): {', '.join(bad[:20])}"
                      + (" ..." if len(bad) > 20 else ""), stacklevel=2)
        keep = [s for s in ds.samples if s[0] not in set(bad)]
        ds.samples = ds.imgs = keep
        ds.targets = [t for _, t in keep]
    if not ds.samples:
        raise CounterclipError(f"imagefolder: no readable images under {root}")
    classnames = [c.replace("_", " ") for c in ds.classes]
    return ds, classnames
