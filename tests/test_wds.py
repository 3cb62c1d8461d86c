"""Webdataset mirrors (issue 9): CLIP_benchmark's layout read back sample for sample, the same numbers as the
same images in an imagefolder, registry fallback, integrity counts, offline --download failing in one line."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from counterclip.data import get_dataset, routes, wds
from counterclip.errors import CounterclipError

FORMATS = ("webp", "png", "jpg")
FMNIST = ["T-shirt top", "Trouser", "Pullover", "Dress"]  # Fashion-MNIST labels 0..3
CLASSES = sorted(FMNIST)  # the mirror's label order = the imagefolder's (sorted folder names)


def _fmnist_images(n):
    from counterclip.data import fashion_mnist

    images, labels = fashion_mnist.load_arrays("test", None, False)
    keep = [i for i in range(len(labels)) if labels[i] < len(FMNIST)][:n]
    return images[keep], np.array([CLASSES.index(FMNIST[int(lab)]) for lab in labels[keep]])


def _encode(arr: np.ndarray, fmt: str) -> bytes:
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

    images, labels = _fmnist_images(n)
    order = sorted(range(n), key=lambda i: (int(labels[i]), i))  # imagefolder order: class, then file name
    mirror, folder = root / name, root / "imagefolder"
    (mirror / split).mkdir(parents=True)
    with webdataset.ShardWriter(str(mirror / split / "%d.tar"), maxcount=per_shard, verbose=0) as sink:
        for j, i in enumerate(order):
            fmt = FORMATS[j % 3]
            data = _encode(images[i], fmt)
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


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    return build_mirror(tmp_path_factory.mktemp("wds"))


def test_mirror_reads_every_format_and_matches_the_imagefolder(mirror):
    copy, folder = mirror
    assert int((copy / "test" / "nshards.txt").read_text()) >= 3
    w = get_dataset("wds/mini", data_root=copy, image_size=28)
    f = get_dataset("imagefolder", data_root=folder, image_size=28)
    assert len(w) == len(f) == 24
    assert w.classnames == f.classnames and w.templates == f.templates == ["a photo of a {}."]
    assert {s.ext for s in w.dataset.samples} == set(FORMATS)
    for i in range(len(w)):
        (xw, yw), (xf, yf) = w.dataset[i], f.dataset[i]
        assert yw == yf and torch.equal(xw, xf), i
    assert w.source == "wds:clip-benchmark/wds_mini" and w.split == "test"
    assert w.record_fields()["count_check"]["status"] == "unknown"  # not a registry dataset's mirror
