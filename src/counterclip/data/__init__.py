"""Dataset registry: ``get_dataset(name, ...) -> LoadedDataset`` with class names and prompt templates.

Registered: the paper's 16 evaluation datasets and TinyImageNet (``paper.py``, torchvision-backed, class
names and templates in ``metadata/*.json``, see docs/datasets.md), the offline ``fashion-mnist`` set,
``imagefolder`` (any folder of class sub-folders) and ``wds/<name>`` (a CLIP_benchmark webdataset mirror,
``wds.py``). A registry dataset missing from disk falls back to its mirror (``routes.py``) when a copy is
found or ``--download`` is asked for where torchvision's own download is broken; ``LoadedDataset.source``
says which route was taken, and a sample count off the known one fails unless ``allow_partial``.

Images reach the model as float tensors in [0,1], 3-channel RGB even for grayscale sources (as
``PIL.Image.convert("RGB")`` gives), so an attacker perturbs all three channels as for any photo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from ..errors import UnknownNameError
from ..registry import Registry
from . import fashion_mnist, paper
from .aliases import canonical
from .prompts import DEFAULT_PROMPTS, PROMPT_STYLES, check_style, prompt_set


@dataclass
class LoadedDataset:
    name: str
    dataset: Dataset  # items: (x float [3,H,W] in [0,1], label int)
    classnames: list[str]
    templates: list[str]
    split: str
    preprocess: str = ""  # described in result records and cache keys
    extra: dict = field(default_factory=dict)
    prompts: str = "clip"  # the prompt style of classnames/templates (data/prompts.py)
    source: str = ""  # "torchvision", "wds:<hub repo>", "imagefolder", "embedded": part of cache keys

    def __len__(self) -> int:
        return len(self.dataset)

    def cache_fields(self) -> dict:
        """``extra`` as the eval cache key sees it: without what says *how* the same data was reached this time
        (a mirror found in the cache after the run that downloaded it; --allow-partial on a complete copy), so
        re-running the same command resumes instead of recomputing."""
        out = dict(self.extra)
        if isinstance(out.get("mirror"), dict):
            out["mirror"] = {k: v for k, v in out["mirror"].items() if k != "found"}
        if isinstance(out.get("count_check"), dict):
            out["count_check"] = {k: v for k, v in out["count_check"].items() if k != "allow_partial"}
        return out

    def record_fields(self) -> dict:
        """What a result record states about the data: route, split size, split caveats, the count check."""
        out = {"source": self.source, "dataset_size": len(self)}
        for k in ("split_note", "count_check", "mirror"):
            if k in self.extra:
                out[k] = self.extra[k]
        return out


class TensorImages(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


INTERPOLATIONS = ("bilinear", "bicubic")  # the resize filters the references use (finetune.md section 1)


def check_interpolation(interpolation: str) -> str:
    if interpolation not in INTERPOLATIONS:
        raise UnknownNameError("interpolation", interpolation, INTERPOLATIONS)
    return interpolation


def pil_transform(image_size: int, resize: int | None = None, interpolation: str = "bilinear"):
    """Resize(resize or image_size) + CenterCrop(image_size), RGB, to [0,1] (the paper uses 256 / 224, with
    torchvision's default bilinear resize as the reference code does; FARE's RobustVLM code resizes bicubic)."""
    from torchvision import transforms as T

    mode = T.InterpolationMode(check_interpolation(interpolation))
    return T.Compose([T.Lambda(_to_rgb), T.Resize(resize or image_size, interpolation=mode),
                      T.CenterCrop(image_size), T.ToTensor()])


def describe_transform(image_size: int, resize: int | None = None, interpolation: str = "bilinear") -> str:
    """``LoadedDataset.preprocess``: the default (bilinear) reads as before, so existing cache keys hold."""
    how = "" if interpolation == "bilinear" else f", {interpolation}"
    return f"Resize({resize or image_size}{how})+CenterCrop({image_size})"


def _to_rgb(im):  # a named function, not a lambda: DataLoader workers must pickle the transform
    return im.convert("RGB")


def _fashion_mnist(split, data_root, download, image_size, resize, prompts="clip", interpolation="bilinear"):
    ps = prompt_set("fashion-mnist", prompts)
    images, labels = fashion_mnist.load_arrays(split, data_root, download)
    ds = TensorImages(fashion_mnist.to_rgb_tensor(images), torch.from_numpy(labels))
    return LoadedDataset("fashion-mnist", ds, ps["classnames"], ps["templates"], split,
                         preprocess="native 28x28 grayscale->RGB", prompts=prompts, source="embedded")


def _imagefolder(split, data_root, download, image_size, resize, prompts="clip", interpolation="bilinear"):
    from . import imagefolder

    if prompts != "clip":
        prompt_set("imagefolder", prompts)  # raises: class names come from the folders

    ds, classnames = imagefolder.build(data_root, pil_transform(image_size, resize, interpolation))
    return LoadedDataset("imagefolder", ds, classnames, ["a photo of a {}."], split,
                         preprocess=describe_transform(image_size, resize, interpolation),
                         extra={"data_root": str(data_root), "skipped_images": ds.skipped}, source="imagefolder")


# dataset keys -> builders ``(split, data_root, download, image_size, resize, prompts=, interpolation=) ->
# LoadedDataset``; the paper's datasets are data (paper.SPECS) with one builder each. ``wds/<name>`` mirrors and
# CLIP_benchmark's ids (aliases.py, some of which name a mirror) are resolved before the registry is asked.
DATASETS: Registry = Registry("dataset", plugins=False)
DATASETS.add("fashion-mnist", _fashion_mnist, summary="Fashion-MNIST test/train, embedded (Debian package)")
DATASETS.add("imagefolder", _imagefolder, summary="any ImageFolder tree (--data-root)")
for _key in paper.SPECS:
    DATASETS.add(_key, paper.builder(_key))
BUILDERS = DATASETS  # the name earlier code imports


def list_datasets() -> list[str]:
    return sorted(DATASETS.names())


def get_dataset(name: str, split: str = "test", data_root=None, download: bool = False, image_size: int = 224,
                resize: int | None = None, prompts: str = DEFAULT_PROMPTS,
                allow_partial: bool = False, interpolation: str = "bilinear") -> LoadedDataset:
    """Load a registered dataset (or ``wds/<name>``, a webdataset mirror); a missing one fails with where it
    looked and how to get it, a registry dataset whose sample count is off fails unless ``allow_partial``.

    prompts: ``"clip"`` (curated class names, the default) or ``"reference"`` (exactly as the reference TTC
    code forms them, spec section 7; for ImageNet that drops class n03710637 and its images). A ``wds/<name>``
    mirror uses its own class names and templates. CLIP_benchmark's dataset ids (imagenet1k, pets, cars, flowers,
    fgvc_aircraft, vtab/...) are aliases of the registry keys. interpolation: the resize filter, ``"bilinear"``
    (torchvision's default) or ``"bicubic"``; a dataset at its native size (fashion-mnist) is not resized."""
    from . import sources

    check_interpolation(interpolation)
    key = name if name.lower().startswith("wds/") else canonical(name)  # vtab/caltech101 -> its mirror
    if key.lower().startswith("wds/"):
        check_style(prompts)
        return sources.mirror_dataset(key[len("wds/"):], split, data_root, download, image_size, resize,
                                      allow_partial, prompts, interpolation=interpolation)
    if key not in DATASETS:
        DATASETS.unknown(name, extra=["wds/<name>"])
    check_style(prompts)
    if key in paper.SPECS:
        return sources.registry_dataset(key, DATASETS.resolve(key), split, data_root, download, image_size, resize,
                                        allow_partial, prompts, interpolation=interpolation)
    return DATASETS.resolve(key)(split, data_root, download, image_size, resize, prompts=prompts,
                                 interpolation=interpolation)
