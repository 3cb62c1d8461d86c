"""Webdataset mirrors in CLIP_benchmark's layout, built from Fashion-MNIST images, for the tests that read them
(tests/integration/test_wds.py and the clip-benchmark yardstick in tests/reference). A plain module, importable
by name because pyproject.toml's pytest options put tests/ on sys.path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = ("webp", "png", "jpg")
FMNIST = ["T-shirt top", "Trouser", "Pullover", "Dress"]  # Fashion-MNIST labels 0..3
CLASSES = sorted(FMNIST)  # the mirror's label order = the imagefolder's (sorted folder names)


def fmnist_images(n):
    from counterclip.data import fashion_mnist

    images, labels = fashion_mnist.load_arrays("test", None, False)
    keep = [i for i in range(len(labels)) if labels[i] < len(FMNIST)][:n]
    return images[keep], np.array([CLASSES.index(FMNIST[int(lab)]) for lab in labels[keep]])


def encode(arr: np.ndarray, fmt: str) -> bytes:
    im = Image.fromarray(np.stack([arr, arr[::-1], arr.T], -1).astype(np.uint8))  # 3 distinct channels
    buf = io.BytesIO()
    if fmt == "webp":
        im.save(buf, format="WEBP", lossless=True)
    elif fmt == "png":
        im.save(buf, format="PNG")
    else:
        im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def build_mirror(root: Path, n=24, per_shard=7, split="test", name="wds_mini"):
    """A mirror in CLIP_benchmark's layout (written with webdataset's ShardWriter, as clip_benchmark_export_wds
    does) plus an imagefolder with the same decoded pixels; returns (mirror dir, imagefolder dir)."""
    import webdataset

    images, labels = fmnist_images(n)
    order = sorted(range(n), key=lambda i: (int(labels[i]), i))  # imagefolder order: class, then file name
    mirror, folder = root / name, root / "imagefolder"
    (mirror / split).mkdir(parents=True)
    with webdataset.ShardWriter(str(mirror / split / "%d.tar"), maxcount=per_shard, verbose=0) as sink:
        for j, i in enumerate(order):
            fmt = FORMATS[j % 3]
            data = encode(images[i], fmt)
            sink.write({"__key__": "s%07d" % j, fmt: data, "cls": int(labels[i])})
            dest = folder / CLASSES[int(labels[i])].replace(" ", "_") / f"{j:04d}.{'jpg' if fmt == 'jpg' else 'png'}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "jpg":
                dest.write_bytes(data)  # the same jpg bytes: both sides decode them the same way
            else:  # webp/png are lossless: the imagefolder gets the pixels as png
                Image.open(io.BytesIO(data)).save(dest)
        nshards = sink.shard
    (mirror / split / "nshards.txt").write_text(f"{nshards}\n")
    (mirror / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    (mirror / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    return mirror, folder
