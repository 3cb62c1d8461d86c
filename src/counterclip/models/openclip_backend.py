"""open_clip backend: architectures with a pretrained tag, a local checkpoint, ``hf-hub:`` ids and ``local-dir:``."""

from __future__ import annotations

import os

from ..errors import CounterclipError, UnknownNameError
from .clip_model import ClipModel


def _offline_error(what: str, e: Exception) -> CounterclipError:
    reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    return CounterclipError(
        f"could not get weights for {what} ({reason[:300]}). No network, or no cached copy: pass a local "
        "checkpoint file with --pretrained PATH (e.g. open_clip_pytorch_model.bin / .safetensors), or pre-fill "
        "the Hugging Face cache (HF_HOME / HF_HUB_CACHE) on a machine with network and set HF_HUB_OFFLINE=1")


def build(name: str, pretrained: str | None, device="cpu", random_init: bool = False) -> ClipModel:
    import open_clip

    arch = name
    load_weights = not random_init
    if name.startswith(("hf-hub:", "local-dir:")):
        kwargs = {}
        label = name
    else:
        if arch not in open_clip.list_models():
            from .registry import EMBEDDED

            raise UnknownNameError("model", name, list(EMBEDDED) + open_clip.list_models()
                                   + ["hf:<hub id or local dir>", "hf-hub:<org/repo>"])
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if pretrained is None:
            raise CounterclipError(f"model {arch!r} needs --pretrained: one of {', '.join(tags) or '(no tags)'}, "
                                   "a local checkpoint file, or 'random' for random initialisation")
        if pretrained == "random":
            load_weights = False
        elif pretrained not in tags and not os.path.isfile(pretrained):
            raise CounterclipError(f"unknown pretrained tag {pretrained!r} for {arch}, and no such file; valid "
                                   f"tags: {', '.join(tags) or '(none)'}")
        kwargs = {"pretrained": None if pretrained == "random" else pretrained}
        label = f"{arch} / {pretrained}"
    try:
        model = open_clip.create_model(name, load_weights=load_weights, device=device, weights_only=True,
                                       **kwargs)
    except (RuntimeError, OSError, ValueError) as e:
        if isinstance(e, FileNotFoundError) or "local-dir" in name:
            raise CounterclipError(f"cannot load {name}: {e}") from None
        raise _offline_error(label, e) from None
    tokenizer = open_clip.get_tokenizer(name)
    pp = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size

    def text_fn(texts):
        tokens = tokenizer(texts).to(next(model.parameters()).device)
        return model.encode_text(tokens)

    clip = ClipModel(model.visual, text_fn, image_size=image_size, logit_scale=model.logit_scale.exp().item(),
                     mean=pp.get("mean", None) or (0.48145466, 0.4578275, 0.40821073),
                     std=pp.get("std", None) or (0.26862954, 0.26130258, 0.27577711),
                     interpolation=_interp(pp.get("interpolation", "bicubic")), name=name, pretrained=pretrained,
                     backbone=model)
    return clip.to(device)


def _interp(name: str) -> str:
    return name if name in ("bicubic", "bilinear", "nearest") else "bicubic"
