"""Encoder pass counting: how many image-encoder forwards and backwards a defense really runs per image.

``with PassCounter() as c: defense(classifier, x)`` counts every image that goes through ``ClipModel.encode_image``
(or ``encode_image_base``) as one forward, and every image whose embedding later receives a gradient as one
backward (a hook on the embedding fires when autograd reaches it), and likewise for the text tower when a
defense encodes prompts at test time (R-TPT). Counts are measured, not assumed from the algorithm's description,
so a defense that runs a pass more than it should shows it. Counters nest; with none active the cost of
counting is one list check per encoder call.
"""

from __future__ import annotations

import torch

_ACTIVE: list["PassCounter"] = []

FIELDS = ("image_forwards", "image_backwards", "text_forwards", "text_backwards")


class PassCounter:
    def __init__(self):
        self.image_forwards = 0
        self.image_backwards = 0
        self.text_forwards = 0
        self.text_backwards = 0

    def __enter__(self) -> "PassCounter":
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc):
        _ACTIVE.remove(self)
        return False

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in FIELDS}

    def per_image(self, n: int) -> dict:
        return {f"{k}_per_image": (getattr(self, k) / n if n else 0.0) for k in FIELDS}


def _count(kind: str, out: torch.Tensor, n: int) -> torch.Tensor:
    if not _ACTIVE:
        return out
    counters = list(_ACTIVE)
    for c in counters:
        setattr(c, f"{kind}_forwards", getattr(c, f"{kind}_forwards") + n)
    if out.requires_grad:
        def hook(grad, counters=counters):
            for c in counters:
                setattr(c, f"{kind}_backwards", getattr(c, f"{kind}_backwards") + n)
            return grad
        out.register_hook(hook)
    return out


def count_image(out: torch.Tensor) -> torch.Tensor:
    """Called by the model layer on every image-encoder output (n = batch size)."""
    return _count("image", out, out.shape[0])


def count_text(out: torch.Tensor, n: int = 1) -> torch.Tensor:
    """Called on a text-encoder output; ``n`` is how many images this text pass serves (a prompt set encoded
    once per image counts 1 per image)."""
    return _count("text", out, n)
