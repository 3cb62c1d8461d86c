"""Fashion-MNIST, offline first: Debian's ``dataset-fashion-mnist`` package, then torchvision's copy/download."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import CounterclipError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# torchvision's FashionMNIST.classes, the names the zero-shot target is stated with
CLASSNAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
              "Ankle boot"]
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _candidate_dirs(data_root: str | os.PathLike | None) -> list[Path]:
    dirs = []
    if data_root is not None:
        root = Path(data_root)
        dirs += [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]
    env = os.environ.get("COUNTERCLIP_FMNIST_DIR")
    if env:
        dirs.append(Path(env))
    dirs.append(DEBIAN_DIR)
    return dirs


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def load_arrays(split: str = "test", data_root=None, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 [N,28,28], labels int64 [N])`` for ``split`` in {"train", "test"}."""
    if split not in _FILES:
        raise CounterclipError(f"fashion-mnist has splits 'train' and 'test', not {split!r}")
    img_stem, lbl_stem = _FILES[split]
    looked = _candidate_dirs(data_root)
    for d in looked:
        img, lbl = _find(d, img_stem), _find(d, lbl_stem)
        if img and lbl:
            return _read_idx(img), _read_idx(lbl).astype(np.int64)
    if download:
        import torchvision

        root = Path(data_root) if data_root else Path.home() / ".cache" / "counterclip" / "datasets"
        try:
            ds = torchvision.datasets.FashionMNIST(str(root), train=split == "train", download=True)
        except Exception as e:  # offline: one line, not a urllib traceback
            raise CounterclipError(f"fashion-mnist: download into {root} failed ({type(e).__name__}: {e})") from None
        return ds.data.numpy(), ds.targets.numpy().astype(np.int64)
    raise CounterclipError(
        "fashion-mnist not found; looked in " + ", ".join(str(d) for d in looked)
        + ". Get it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or pass --download "
        "(torchvision's FashionMNIST download)")


def to_rgb_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W] -> float [N,3,H,W] in [0,1], grayscale replicated as PIL's convert("RGB") does."""
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0)
    return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
