"""Zero-shot classification: pixels in [0,1] -> ``logit_scale * cos(image, class text)``."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError
from .inputs import entry

DEFAULT_TEMPLATES = ("a photo of a {}.",)


class ZeroShotClassifier(nn.Module):
    """Wraps a ``ClipModel`` with class prompts.

    Text embeddings are computed once here (prompt ensembling: the mean of the L2-normalised template
    embeddings, renormalised) and cached as a buffer; no attack or defense ever re-encodes text. Gradients
    flow to the input pixels, never to weights. ``encode_image`` and ``logits_from_embeddings`` let a defense
    that already holds an image embedding classify it without another forward pass.
    """

    def __init__(self, model: nn.Module, classnames: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES):
        super().__init__()
        if not classnames:
            raise ValueError("ZeroShotClassifier needs at least one class name")
        if isinstance(templates, str):
            templates = [templates]
        self.model = model
        self.classnames = list(classnames)
        self.templates = [check_template(t) for t in templates]
        if not self.templates:
            raise InputError("ZeroShotClassifier needs at least one template, e.g. 'a photo of a {}.'")
        self.logit_scale = float(model.logit_scale)
        with torch.no_grad():
            weights = []
            for name in self.classnames:
                emb = F.normalize(model.encode_text([t.format(name) for t in self.templates]).float(), dim=-1)
                weights.append(F.normalize(emb.mean(0), dim=-1))
        # persistent: a state dict carries the class text, so loading it into another classifier replaces it
        self.register_buffer("text_embeddings", torch.stack(weights).detach())

    # what the text embeddings mean travels with them: loading a state dict into another classifier replaces
    # its class names, templates and logit scale too, not only the embeddings (else its labels go stale)
    def get_extra_state(self) -> dict:
        return {"classnames": list(self.classnames), "templates": list(self.templates),
                "logit_scale": float(self.logit_scale)}

    def set_extra_state(self, state) -> None:
        self.classnames = list(state["classnames"])
        self.templates = list(state["templates"])
        self.logit_scale = float(state["logit_scale"])

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def logits_from_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        e = F.normalize(embeddings.float(), dim=-1)
        return self.logit_scale * e @ self.text_embeddings.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with entry(x, "ZeroShotClassifier"):
            return self.logits_from_embeddings(self.encode_image(x))


def check_template(template, where: str = "") -> str:
    """A prompt template with one ``{}`` where the class name goes (without it every class gets the same text
    and the classifier is constant); ``where`` prefixes the error (the file it came from)."""
    t = str(template)
    try:
        ok = t.count("{}") == 1 and t.format("x") is not None
    except (IndexError, KeyError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{where}{': ' if where else ''}template {t!r} must contain {{}} once, where the class "
                         "name goes (e.g. 'a photo of a {}.')")
    return t
