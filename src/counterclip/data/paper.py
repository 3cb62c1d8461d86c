"""The paper's 16 evaluation datasets and TinyImageNet, on torchvision's dataset classes.

Class names and the paper's prompt template for each dataset ship as package data
(``metadata/<key>.json``; ``docs/datasets.md`` says where every list comes from and where it differs from
the paper). Nothing is downloaded unless ``download=True``; a dataset that is not on disk fails with one
``CounterclipError`` line that says where it looked and how to get the data. The presence check runs
before torchvision is called, so a missing dataset fails at once and leaves no empty folders behind.

Split: the paper evaluates test splits; ``split="test"`` maps to each dataset's evaluation split
(``val`` for ImageNet and TinyImageNet, the whole dataset for Caltech101/256, SUN397 and EuroSAT, as
the reference code does). ``LoadedDataset.split`` records the split actually loaded.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Callable

from ..errors import CounterclipError, DatasetNotFoundError

DATA_ENV = "COUNTERCLIP_DATA"
DEFAULT_ROOT = Path("~/.cache/counterclip/datasets")


def default_data_root(data_root=None) -> Path:
    """``data_root`` if given, else ``$COUNTERCLIP_DATA``, else ``~/.cache/counterclip/datasets``."""
    if data_root is not None and str(data_root) != "":
        return Path(data_root).expanduser()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else DEFAULT_ROOT.expanduser()


@lru_cache(maxsize=None)
def load_metadata(key: str) -> dict:
    """The packaged class names / templates / sources of one dataset (``metadata/<key>.json``)."""
    name = key.replace("-", "_") + ".json"
    try:
        text = resources.files("counterclip.data").joinpath("metadata", name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CounterclipError(f"no packaged metadata for dataset {key!r} (metadata/{name})") from None
    return json.loads(text)


def _norm(name: str) -> str:
    """Compare class identifiers across sources: case, '_', '-', '/' and spacing do not matter."""
    for ch in "_-/":
        name = name.replace(ch, " ")
    return " ".join(name.lower().split())


@dataclass(frozen=True)
class PaperDataset:
    key: str
    splits: dict  # requested split -> the split torchvision (or our loader) is given
    needs: Callable[[Path, str], list]  # (root, native split) -> paths that must exist
    howto: str  # how to get the data; "{root}" is replaced by the data root
    downloadable: bool  # whether download=True can fetch it
    make: Callable  # (root, native split, download, transform) -> torch Dataset
    native_classes: Callable = lambda ds: None  # dataset -> class identifiers in label order, or None

    @property
    def meta(self) -> dict:
        return load_metadata(self.key)


def _tv():
    import torchvision.datasets as tvd

    return tvd


# --- TinyImageNet: val/ is a flat images/ folder plus val_annotations.txt -----------------------------

def _tiny_folder_class():
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    class TinyImageNetVal(ImageFolder):
        """ImageFolder over ``tiny-imagenet-200/val`` in its shipped layout (``images/`` +
        ``val_annotations.txt``); classes are the sorted WordNet ids, as for a ``val/<wnid>/`` layout."""

        def __init__(self, root, wnids, **kwargs):
            self._wnids = sorted(wnids)
            super().__init__(root, **kwargs)

        def find_classes(self, directory):
            return list(self._wnids), {w: i for i, w in enumerate(self._wnids)}

        @staticmethod
        def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
            samples = []
            ann = Path(directory) / "val_annotations.txt"
            with open(ann, encoding="utf-8") as f:
                for line in f:
                    parts = line.split("\t")
                    if len(parts) < 2:
                        continue
                    fname, wnid = parts[0].strip(), parts[1].strip()
                    if wnid not in class_to_idx:
                        raise CounterclipError(f"tinyimagenet: {ann} names class {wnid!r}, not one of the 200 "
                                               "Tiny ImageNet WordNet ids")
                    path = Path(directory) / "images" / fname
                    if path.suffix.lower() in IMG_EXTENSIONS:
                        samples.append((str(path), class_to_idx[wnid]))
            return samples

    return TinyImageNetVal


TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def _tiny_needs(root: Path, split: str) -> list:
    base = root / "tiny-imagenet-200" / split
    if split == "val" and not (base / "val_annotations.txt").is_file() and base.is_dir():
        return [base]  # already restructured into val/<wnid>/ (ImageFolder layout)
    return [base / "val_annotations.txt", base / "images"] if split == "val" else [base]


def _tiny_make(root: Path, split: str, download: bool, transform):
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.utils import download_and_extract_archive

    base = root / "tiny-imagenet-200"
    if download and not (base / split).is_dir():
        download_and_extract_archive(TINY_URL, download_root=str(root))
    folder = base / split
    if split == "val" and (folder / "val_annotations.txt").is_file():
        return _tiny_folder_class()(str(folder), load_metadata("tinyimagenet")["raw_classes"], transform=transform)
    return ImageFolder(str(folder), transform=transform)


# --- ImageNet: torchvision's ImageNet (meta.bin / devkit archive), else a plain val/<wnid>/ folder -------

IMAGENET_DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
IMAGENET_VAL_TAR = "ILSVRC2012_img_val.tar"


def _imagenet_needs(root: Path, split: str) -> list:
    base = root / "imagenet"
    if (base / split).is_dir():
        return [base / split]
    if (base / IMAGENET_VAL_TAR).is_file():
        if (base / "meta.bin").is_file():
            return []
        return [base / IMAGENET_DEVKIT]
    return [base / split]


def _imagenet_make(root: Path, split: str, download: bool, transform):
    tvd = _tv()
    base = root / "imagenet"
    if (base / "meta.bin").is_file() or (base / IMAGENET_DEVKIT).is_file():
        return tvd.ImageNet(str(base), split=split, transform=transform)
    return tvd.ImageFolder(str(base / split), transform=transform)


def _imagenet_classes(ds):
    return list(getattr(ds, "wnids", None) or ds.classes)


# --- the registry -------------------------------------------------------------------------------------

_TEST = {"test": "test"}


def _spec_table() -> dict[str, PaperDataset]:
    P = PaperDataset
    tv = _tv
    dl = "pass --download (torchvision fetches {url} into {{root}})"
    whole = {"test": "all", "all": "all"}
    cls = lambda ds: list(ds.classes)  # noqa: E731
    cats = lambda ds: list(ds.categories)  # noqa: E731
    specs = [
        P("cifar10", {**_TEST, "train": "train"},
          lambda r, s: [r / "cifar-10-batches-py" / ("test_batch" if s == "test" else "data_batch_1")],
          dl.format(url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"), True,
          lambda r, s, d, t: tv().CIFAR10(str(r), train=s == "train", transform=t, download=d), cls),
        P("cifar100", {**_TEST, "train": "train"},
          lambda r, s: [r / "cifar-100-python" / s],
          dl.format(url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"), True,
          lambda r, s, d, t: tv().CIFAR100(str(r), train=s == "train", transform=t, download=d), cls),
        P("stl10", {**_TEST, "train": "train"},
          lambda r, s: [r / "stl10_binary" / f"{s}_X.bin", r / "stl10_binary" / f"{s}_y.bin"],
          dl.format(url="http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"), True,
          lambda r, s, d, t: tv().STL10(str(r), split=s, transform=t, download=d), cls),
        P("imagenet", {"test": "val", "val": "val"}, _imagenet_needs,
          "it cannot be downloaded automatically: log in at https://image-net.org/download-images.php, put "
          f"{IMAGENET_VAL_TAR} and {IMAGENET_DEVKIT} in {{root}}/imagenet (torchvision unpacks them), or "
          "put the validation images there as val/<wnid>/*.JPEG", False, _imagenet_make, _imagenet_classes),
        P("caltech101", whole, lambda r, s: [r / "caltech101" / "101_ObjectCategories"],
          dl.format(url="https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip"), True,
          lambda r, s, d, t: tv().Caltech101(str(r), target_type="category", transform=t, download=d), cats),
        P("caltech256", whole, lambda r, s: [r / "caltech256" / "256_ObjectCategories"],
          dl.format(url="https://data.caltech.edu/records/nyy15-4j048/files/256_ObjectCategories.tar"), True,
          lambda r, s, d, t: tv().Caltech256(str(r), transform=t, download=d), cats),
        P("oxford-pets", {**_TEST, "trainval": "trainval"},
          lambda r, s: [r / "oxford-iiit-pet" / "images", r / "oxford-iiit-pet" / "annotations"],
          dl.format(url="images.tar.gz and annotations.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/pets/data/"),
          True,
          lambda r, s, d, t: tv().OxfordIIITPet(str(r), split=s, target_types="category", transform=t,
                                                download=d), cls),
        P("flowers102", {**_TEST, "val": "val", "train": "train"},
          lambda r, s: [r / "flowers-102" / "jpg", r / "flowers-102" / "imagelabels.mat",
                        r / "flowers-102" / "setid.mat"],
          dl.format(url="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"), True,
          lambda r, s, d, t: tv().Flowers102(str(r), split=s, transform=t, download=d)),
        P("fgvc-aircraft", {**_TEST, "val": "val", "train": "train", "trainval": "trainval"},
          lambda r, s: [r / "fgvc-aircraft-2013b" / "data" / f"images_variant_{s}.txt"],
          dl.format(url="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz"),
          True, lambda r, s, d, t: tv().FGVCAircraft(str(r), split=s, annotation_level="variant", transform=t,
                                                     download=d), cls),
        P("stanford-cars", {**_TEST, "train": "train"},
          lambda r, s: ([r / "stanford_cars" / "devkit", r / "stanford_cars" / "cars_test",
                         r / "stanford_cars" / "cars_test_annos_withlabels.mat"] if s == "test" else
                        [r / "stanford_cars" / "devkit" / "cars_train_annos.mat",
                         r / "stanford_cars" / "cars_train"]),
          "torchvision cannot download it (the original URL is gone): follow "
          "https://github.com/pytorch/vision/issues/7545#issuecomment-1631441616 (a Kaggle copy in torchvision's "
          "layout) and unpack it so that {root}/stanford_cars/devkit/, cars_test/ and "
          "cars_test_annos_withlabels.mat exist", False,
          lambda r, s, d, t: tv().StanfordCars(str(r), split=s, transform=t, download=False), cls),
        P("sun397", whole, lambda r, s: [r / "SUN397" / "ClassName.txt"],
          "torchvision's download URL (http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz) is dead: "
          "--download fetches the webdataset mirror wds/sun397 instead (a test subset, not the whole dataset; "
          "docs/datasets.md), or unpack a SUN397.tar.gz you have into {root} (gives {root}/SUN397/ClassName.txt)",
          True,
          lambda r, s, d, t: tv().SUN397(str(r), transform=t, download=d), cls),
        P("country211", {**_TEST, "val": "valid", "valid": "valid", "train": "train"},
          lambda r, s: [r / "country211" / s],
          dl.format(url="https://openaipublic.azureedge.net/clip/data/country211.tgz"), True,
          lambda r, s, d, t: tv().Country211(str(r), split=s, transform=t, download=d), cls),
        P("food101", {**_TEST, "train": "train"},
          lambda r, s: [r / "food-101" / "images", r / "food-101" / "meta" / f"{s}.json"],
          dl.format(url="http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz"), True,
          lambda r, s, d, t: tv().Food101(str(r), split=s, transform=t, download=d), cls),
        P("eurosat", whole, lambda r, s: [r / "eurosat" / "2750"],
          dl.format(url="https://huggingface.co/datasets/torchgeo/eurosat (EuroSAT.zip)"), True,
          lambda r, s, d, t: tv().EuroSAT(str(r), transform=t, download=d), cls),
        P("dtd", {**_TEST, "val": "val", "train": "train"},
          lambda r, s: [r / "dtd" / "dtd" / "labels" / f"{s}1.txt", r / "dtd" / "dtd" / "images"],
          dl.format(url="https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz"), True,
          lambda r, s, d, t: tv().DTD(str(r), split=s, transform=t, download=d), cls),
        P("pcam", {**_TEST, "val": "val", "train": "train"},
          lambda r, s: [r / "pcam" / f"camelyonpatch_level_2_split_{'valid' if s == 'val' else s}_{xy}.h5"
                        for xy in ("x", "y")],
          "--download fetches the test split from the webdataset mirror wds/vtab/pcam (torchvision's own "
          "download, used for the other splits, goes through Google Drive and needs `pip install h5py gdown`), "
          "or get the .h5.gz files from https://github.com/basveeling/pcam and gunzip them into {root}/pcam", True,
          lambda r, s, d, t: tv().PCAM(str(r), split=s, transform=t, download=d)),
        P("tinyimagenet", {"test": "val", "val": "val", "train": "train"}, _tiny_needs,
          f"pass --download or fetch {TINY_URL} and unzip it into {{root}} (gives {{root}}/tiny-imagenet-200/"
          "wnids.txt, train/, val/images/ and val/val_annotations.txt)", True, _tiny_make,
          lambda ds: list(ds.classes)),
    ]
    return {s.key: s for s in specs}


SPECS: dict[str, PaperDataset] = _spec_table()
PAPER_DATASETS = [k for k in SPECS if k != "tinyimagenet"]  # the 16 averaged in the paper


def _missing_message(spec: PaperDataset, root: Path, missing: list, download: bool) -> str:
    meta = spec.meta
    howto = spec.howto.replace("{root}", str(root))
    extra = " (--download cannot fetch it)" if download and not spec.downloadable else ""
    return (f"dataset {spec.key} ({meta['display_name']}) not found under {root}: missing {missing[0]}{extra}. "
            f"To get it: {howto}. Point elsewhere with --data-root or ${DATA_ENV}.")


def _align_classnames(spec: PaperDataset, native, names: list[str], raw) -> list[str]:
    """Packaged names in the label order of the data on disk (checked against its class identifiers)."""
    names = list(names)
    if native is None:
        return names
    if len(native) != len(names):
        raise CounterclipError(f"dataset {spec.key}: the data on disk has {len(native)} classes, the packaged "
                               f"class list {len(names)}; is this the right dataset/version?")
    if raw is None:
        return names
    pos = {_norm(r): i for i, r in enumerate(raw)}
    order = []
    for c in native:
        if _norm(c) not in pos:
            raise CounterclipError(f"dataset {spec.key}: class {c!r} on disk is not in the packaged class list "
                                   "(metadata/" + spec.key.replace("-", "_") + ".json)")
        order.append(pos[_norm(c)])
    if order != list(range(len(names))):
        warnings.warn(f"dataset {spec.key}: the on-disk class order differs from the packaged list; class names "
                      "were re-ordered to follow the labels", stacklevel=3)
    return [names[i] for i in order]


def _drop_classes(ds, native, drop: list[str]):
    """Remove whole classes (folder and images) from an ImageFolder-like dataset and renumber the rest, as the
    reference does for ImageNet's duplicate n03710637. Returns the remaining class identifiers."""
    if native is None or not any(d in native for d in drop):
        return native
    if not hasattr(ds, "samples"):
        raise CounterclipError(f"cannot drop classes {drop} from a {type(ds).__name__}")
    gone = {native.index(d) for d in drop if d in native}
    new_index, kept = {}, []
    for i, c in enumerate(native):
        if i not in gone:
            new_index[i] = len(kept)
            kept.append(c)
    ds.samples = [(path, new_index[t]) for path, t in ds.samples if t not in gone]
    ds.imgs = ds.samples
    ds.targets = [t for _, t in ds.samples]
    for attr in ("wnids", "classes"):
        value = getattr(ds, attr, None)
        if isinstance(value, list) and len(value) == len(native):
            setattr(ds, attr, [v for i, v in enumerate(value) if i not in gone])
    if hasattr(ds, "class_to_idx"):
        ds.class_to_idx = {c: i for i, c in enumerate(kept)}
    return kept


def build(key: str, split: str, data_root, download: bool, image_size: int, resize, prompts: str = "clip",
          interpolation: str = "bilinear"):
    from . import LoadedDataset, describe_transform, pil_transform
    from .prompts import prompt_set

    spec = SPECS[key]
    ps = prompt_set(key, prompts)
    if split not in spec.splits:
        raise CounterclipError(f"dataset {key} has splits {', '.join(sorted(spec.splits))}, not {split!r}")
    native = spec.splits[split]
    root = default_data_root(data_root)
    missing = [p for p in spec.needs(root, native) if not Path(p).exists()]
    if missing and not (download and spec.downloadable):
        raise DatasetNotFoundError(_missing_message(spec, root, missing, download))
    transform = pil_transform(image_size, resize, interpolation)
    try:
        if download:
            root.mkdir(parents=True, exist_ok=True)
        ds = spec.make(root, native, bool(download), transform)
    except CounterclipError:
        raise
    except Exception as e:  # torchvision's RuntimeError("Dataset not found..."), URLError, ImportError, ...
        first = (str(e).strip().splitlines() or [""])[0]
        hint = spec.howto.replace("{root}", str(root))
        if isinstance(e, ImportError) or "h5py" in first or "gdown" in first:
            hint = f"install the missing package ({first}); or {hint}"
        if download:  # it was passed: say what it tried, to do by hand, not "pass --download" again
            hint = re.sub(r"pass --download \(torchvision fetches (.*?) into (.*?)\)",
                          r"put \1 into \2 by hand and re-run with --download (torchvision unpacks an archive it "
                          r"finds there)", hint).replace("pass --download or ", "")
        what = "download/load failed" if download else "could not be loaded"
        raise CounterclipError(f"dataset {key} ({spec.meta['display_name']}) {what} from {root}: "
                               f"{type(e).__name__}: {first}. To get it: {hint}.") from None
    try:
        native_classes = spec.native_classes(ds)
    except Exception:
        native_classes = None
    n_before_drop = len(ds)  # the integrity check (sources.py) counts the split as published
    if ps.get("drop_classes"):
        native_classes = _drop_classes(ds, native_classes, ps["drop_classes"])
    classnames = _align_classnames(spec, native_classes, ps["classnames"], ps.get("raw_classes"))
    extra = {"data_root": str(root), "requested_split": split, "classnames_source": ps["source"],
             "prompts": prompts}
    if ps.get("drop_classes"):
        extra["dropped_classes"] = list(ps["drop_classes"])
        extra["samples_before_drop"] = n_before_drop
    return LoadedDataset(key, ds, classnames, list(ps["templates"]), native,
                         preprocess=describe_transform(image_size, resize, interpolation), extra=extra,
                         prompts=prompts)


def builder(key: str):
    """A ``BUILDERS`` entry: ``(split, data_root, download, image_size, resize, prompts=, interpolation=) ->
    LoadedDataset``."""
    def _build(split, data_root, download, image_size, resize, prompts="clip", interpolation="bilinear"):
        return build(key, split, data_root, download, image_size, resize, prompts, interpolation)

    _build.__name__ = f"_build_{key.replace('-', '_')}"
    return _build
