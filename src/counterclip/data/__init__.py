"""Dataset registry: ``get_dataset(name, ...) -> LoadedDataset`` with class names and prompt templates.

Registered: the paper's 16 evaluation datasets and TinyImageNet (``paper.py``, torchvision-backed, class
names and templates in ``metadata/*.json``, see docs/datasets.md), the offline ``fashion-mnist`` set and
``imagefolder`` (any folder of class sub-folders).

Images reach the model as float tensors in [0,1], 3-channel RGB even for grayscale sources (as
``PIL.Image.convert("RGB")`` gives), so an attacker perturbs all three channels as for any photo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils.data import Dataset

from ..errors import UnknownNameError
from . import fashion_mnist, paper
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

    def __len__(self) -> int:
        return len(self.dataset)


class TensorImages(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def pil_transform(image_size: int, resize: int | None = None):
    """Resize(resize or image_size) + CenterCrop(image_size), RGB, to [0,1] (the paper uses 256 / 224, with
    torchvision's default bilinear resize as the reference code does)."""
    from torchvision import transforms as T

    return T.Compose([T.Lambda(_to_rgb), T.Resize(resize or image_size), T.CenterCrop(image_size), T.ToTensor()])


def _to_rgb(im):  # a named function, not a lambda: DataLoader workers must pickle the transform
    return im.convert("RGB")


def _fashion_mnist(split, data_root, download, image_size, resize, prompts="clip"):
    ps = prompt_set("fashion-mnist", prompts)
    images, labels = fashion_mnist.load_arrays(split, data_root, download)
    ds = TensorImages(fashion_mnist.to_rgb_tensor(images), torch.from_numpy(labels))
    return LoadedDataset("fashion-mnist", ds, ps["classnames"], ps["templates"], split,
                         preprocess="native 28x28 grayscale->RGB", prompts=prompts)


def _imagefolder(split, data_root, download, image_size, resize, prompts="clip"):
    from . import imagefolder

    if prompts != "clip":
        prompt_set("imagefolder", prompts)  # raises: class names come from the folders

    ds, classnames = imagefolder.build(data_root, pil_transform(image_size, resize))
    return LoadedDataset("imagefolder", ds, classnames, ["a photo of a {}."], split,
                         preprocess=f"Resize({resize or image_size})+CenterCrop({image_size})",
                         extra={"data_root": str(data_root)})


BUILDERS: dict[str, Callable[..., LoadedDataset]] = {
    "fashion-mnist": _fashion_mnist,
    "imagefolder": _imagefolder,
    **{key: paper.builder(key) for key in paper.SPECS},
}


def list_datasets() -> list[str]:
    return sorted(BUILDERS)


def get_dataset(name: str, split: str = "test", data_root=None, download: bool = False, image_size: int = 224,
                resize: int | None = None, prompts: str = DEFAULT_PROMPTS) -> LoadedDataset:
    """Load a registered dataset; a missing one fails with where it looked and how to get it.

    prompts: ``"clip"`` (curated class names, the default) or ``"reference"`` (exactly as the reference TTC
    code forms them, spec section 7; for ImageNet that drops class n03710637 and its images)."""
    key = name.lower()
    if key not in BUILDERS:
        raise UnknownNameError("dataset", name, BUILDERS)
    check_style(prompts)
    return BUILDERS[key](split, data_root, download, image_size, resize, prompts=prompts)
