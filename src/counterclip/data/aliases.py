"""CLIP_benchmark's dataset ids (``clip_benchmark eval --dataset ...``) as aliases of our registry keys, so
a researcher's dataset list works unchanged. The records keep our key."""

from __future__ import annotations

ALIASES = {
    "imagenet1k": "imagenet",
    "pets": "oxford-pets",
    "cars": "stanford-cars",
    "flowers": "flowers102",
    "fgvc_aircraft": "fgvc-aircraft",
    "fashion_mnist": "fashion-mnist",
    **{f"vtab/{k}": v for k, v in {"cifar10": "cifar10", "cifar100": "cifar100", "dtd": "dtd",
                                   "flowers": "flowers102", "pets": "oxford-pets", "pcam": "pcam"}.items()},
    # VTAB's Caltech-101 (102 classes, a 6,084-image test split) and EuroSAT (a 5,400-image test subset) are not
    # our whole-dataset keys: CLIP_benchmark's id means VTAB's split, which only its mirror holds
    "vtab/caltech101": "wds/vtab/caltech101",
    "vtab/eurosat": "wds/vtab/eurosat",
}


def canonical(name: str) -> str:
    """Our registry key for ``name`` (a key, or a CLIP_benchmark id; case-insensitive, ``_`` = ``-``)."""
    key = str(name).strip().lower()
    if key in ALIASES:
        return ALIASES[key]
    return ALIASES.get(key.replace("-", "_"), key)


def imagenet_family(name: str) -> bool:
    """ImageNet or one of its variants (ImageNet-A, -R, -V2, -Sketch, -O; a registry key, a CLIP_benchmark id or
    ``wds/<name>``), the sets on which R-TPT's authors make their views without AugMix. TinyImageNet (64-px
    images, its own 200-class split) is not one: their rule names the five ImageNet test sets only."""
    key = canonical(name)
    key = key[len("wds/"):] if key.startswith("wds/") else key
    return key.startswith("imagenet")
