"""``load_model(name, pretrained=None, device="cpu", vision_checkpoint=None) -> ClipModel``."""

from __future__ import annotations

import copy

import torch

from ..errors import CounterclipError
from ..registry import Registry
from .clip_model import ClipModel
from .registry import DEFAULT_MODEL, EMBEDDED, embedded_dir

__all__ = ["ClipModel", "load_model", "list_models", "DEFAULT_MODEL", "BACKENDS"]


def list_models() -> list[str]:
    """Embedded models first, then every open_clip architecture (each needs a pretrained tag or file)."""
    import open_clip

    return list(EMBEDDED) + open_clip.list_models()


def load_model(name: str = DEFAULT_MODEL, pretrained: str | None = None, device="cpu",
               vision_checkpoint: str | None = None) -> ClipModel:
    """Load a frozen CLIP in eval mode behind the ``ClipModel`` contract.

    name: an embedded model (``tiny-fmnist``), an open_clip architecture (``ViT-B-32``) with ``pretrained`` a tag
      (``openai``) or a local checkpoint file, an ``hf-hub:org/repo`` or ``local-dir:/path`` open_clip id, or
      ``hf:<hub id or local dir>`` for transformers' CLIPModel.
    pretrained: None means the model's own default weights (embedded models only; open_clip architectures
      must name a tag); ``"random"`` gives random initialisation.
    vision_checkpoint: a robust finetuned vision tower (TeCoA / PMG-AFT / FARE format) loaded strictly over the
      base model's; the original tower is kept as ``model.base_visual`` for TTC's tau (spec section 2).
    """
    backend = next(e for e in BACKENDS.entries() if e.meta["accepts"](name))
    model = BACKENDS.resolve(backend.name)(name, pretrained, device)
    if vision_checkpoint is not None:
        from .checkpoints import load_vision_checkpoint
        from .registry import robust_tower_path

        vision_checkpoint = robust_tower_path(vision_checkpoint, name)
        base = copy.deepcopy(model.visual)
        meta = load_vision_checkpoint(model.visual, vision_checkpoint)
        model.base_visual = base
        if meta.get("normalisation") == "imagenet":
            # PMG-AFT's official variant trains under ImageNet statistics; CLIP's would be silently wrong
            from .clip_model import IMAGENET_MEAN, IMAGENET_STD

            model.mean.copy_(torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            model.std.copy_(torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        model.vision_checkpoint = str(vision_checkpoint)
    return model.freeze()


def _load_hf(name: str, pretrained, device) -> ClipModel:
    if pretrained is not None:
        raise CounterclipError("hf: models take their weights from the hub id or directory; drop --pretrained")
    from . import hf_backend

    return hf_backend.build(name, device=device)


def _load_open_clip(name: str, pretrained, device) -> ClipModel:
    from . import openclip_backend

    return openclip_backend.build(name, pretrained, device=device)


def _load_embedded(name: str, pretrained: str | None, device) -> ClipModel:
    from . import openclip_backend

    if pretrained not in (None, "random"):
        raise CounterclipError(f"{name} is an embedded model: pretrained must be None (its embedded weights) or "
                               f"'random', not {pretrained!r}")
    folder = embedded_dir(name)
    needed = ["open_clip_config.json"] + ([] if pretrained == "random" else ["open_clip_model.safetensors"])
    if not all((folder / f).is_file() for f in needed):
        raise CounterclipError(f"embedded model {name} is missing its files in {folder}; reinstall counterclip "
                               "or retrain with `counterclip train-tiny`")
    model = openclip_backend.build(f"local-dir:{folder}", None, device=device, random_init=pretrained == "random")
    model.name, model.pretrained = name, pretrained
    return model


# model backends, asked in this order which one takes a name (the last takes every other name): a backend is a
# loader ``(name, pretrained, device) -> ClipModel`` behind the ClipModel contract
BACKENDS: Registry = Registry("model backend", plugins=False)
BACKENDS.add("embedded", _load_embedded, accepts=lambda name: name in EMBEDDED,
             summary="counterclip's own models shipped in the package (tiny-fmnist)")
BACKENDS.add("transformers", _load_hf, accepts=lambda name: name.startswith("hf:"),
             summary="hf:<hub id or folder>: transformers' CLIPModel")
BACKENDS.add("open_clip", _load_open_clip, accepts=lambda name: True,
             summary="an open_clip architecture with a pretrained tag or file, hf-hub:ORG/REPO, local-dir:PATH")
