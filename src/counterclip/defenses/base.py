"""The defense contract and ``Defended``, a defended classifier that is itself an ``nn.Module``.

``defense(classifier, x, generator=None) -> logits``: the fast inference path (no-grad, detached passes).
``defense.differentiable(classifier, x, generator=None) -> logits``: the same prediction computed with a graph
back to ``x``, for attacks that target the defense (its gradient choices are documented per defense).
``classifier`` is a ``ZeroShotClassifier`` (or anything with ``encode_image``, ``logits_from_embeddings`` and
``__call__``).
"""

from __future__ import annotations

import torch
from torch import nn


class Defense:
    name = "defense"  # the CLI word
    randomized = False  # its output depends on a random draw
    dynamic = False  # it optimises per input at test time (gradient-based purification)

    def __call__(self, classifier, x: torch.Tensor, generator=None) -> torch.Tensor:
        with torch.no_grad():
            return self.predict(classifier, x, generator)

    def predict(self, classifier, x, generator=None) -> torch.Tensor:
        raise NotImplementedError

    def differentiable(self, classifier, x, generator=None, mode: str = "full") -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no differentiable mode")

    def params(self) -> dict:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self.params().items())})"


class NoDefense(Defense):
    """The undefended classifier (CLI word ``none``)."""

    name = "none"

    def predict(self, classifier, x, generator=None):
        return classifier(x)

    def differentiable(self, classifier, x, generator=None, mode: str = "full"):
        return classifier(x)


class Defended(nn.Module):
    """``Defended(defense, classifier)``: an ``nn.Module`` mapping pixels to defended logits.

    ``differentiable=False`` (default) runs the defense's fast inference path: an outer attack gets no useful
    gradient from it (the defense detaches). ``differentiable=True`` (or ``"full"``) runs
    ``defense.differentiable``, which keeps a graph to the input with the gradient choices the defense
    documents (straight-through/BPDA where it uses non-differentiable steps); ``"bpda"`` treats the defense's
    purification as identity on the backward pass. Adaptive attacks use these modes. ``generator`` seeds
    the defense's randomness.
    """

    def __init__(self, defense: Defense, classifier: nn.Module, differentiable: bool | str = False,
                 generator=None):
        super().__init__()
        if differentiable not in (False, True, "full", "bpda"):
            raise ValueError(f"differentiable must be False, True, 'full' or 'bpda', not {differentiable!r}")
        self.defense = defense
        self.classifier = classifier
        self.mode = "full" if differentiable is True else (differentiable or None)
        self.generator = generator

    @property
    def classnames(self):
        return self.classifier.classnames

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    def forward(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        gen = generator if generator is not None else self.generator
        if self.mode:
            return self.defense.differentiable(self.classifier, x, gen, mode=self.mode)
        return self.defense(self.classifier, x, gen)
