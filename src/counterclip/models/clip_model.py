"""The ``ClipModel`` contract every backend adapts to: pixels in [0,1] in, unnormalised embeddings out."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..cost import count_image
from .preprocessing import Geometry, squash

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # PMG-AFT's official code trains and evaluates with these
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_CHOICES = ("model", "squash")


class ClipModel(nn.Module):
    """A frozen CLIP in eval mode.

    ``encode_image(x)`` takes pixels in [0,1] of any size with 1 or 3 channels and does the resize to
    ``image_size`` and the mean/std normalisation inside, differentiably, so attacks and defenses work in
    pixel space. An input not at ``image_size`` follows the model's own preprocessing geometry
    (``geometry``: open_clip / HF shorter-side antialiased resize + centre crop; ``resize_mode="squash"``
    restores the earlier plain resize); an input at ``image_size`` is only normalised. ``encode_text``
    tokenises and encodes a list of strings. ``logit_scale`` is the float multiplier (100.0 for OpenAI CLIP).
    Backends supply ``visual`` (normalised pixels -> embedding) and ``text_fn`` (list of str -> embedding).
    """

    def __init__(self, visual: nn.Module, text_fn: Callable[[Sequence[str]], torch.Tensor], *, image_size: int,
                 logit_scale: float, mean=OPENAI_MEAN, std=OPENAI_STD, interpolation: str = "bicubic",
                 name: str = "", pretrained: str | None = None, backbone: nn.Module | None = None,
                 geometry: Geometry | None = None):
        super().__init__()
        self.backbone = backbone  # owns the text tower's weights so .to()/.requires_grad_ reach them
        self.visual = visual
        self._text_fn = text_fn
        self.image_size = int(image_size)
        self.logit_scale = float(logit_scale)
        self.interpolation = interpolation
        # the model's own preprocessing geometry (shorter-side resize + centre crop for open_clip / HF)
        self.model_geometry = geometry or Geometry(size=self.image_size, crop=(self.image_size,) * 2,
                                                   interpolation=interpolation)
        self.geometry = self.model_geometry
        self.name, self.pretrained = name, pretrained
        self.vision_checkpoint: str | None = None
        self.activation: str | None = None  # the MLP activation the backend built (quick_gelu / gelu), for records
        self.base_visual: nn.Module | None = None  # the original tower when a robust one was loaded
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def freeze(self) -> "ClipModel":
        self.eval()
        self.requires_grad_(False)
        return self

    def train(self, mode: bool = True):  # weights stay frozen and dropout stays off: this is an evaluator
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[0,1] pixels (B,C,H,W), C in {1,3} -> resized, normalised model input. Differentiable in x."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images shaped (B, 1 or 3, H, W), got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = self.geometry(x)  # identity at the model's size
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    @property
    def resize_mode(self) -> str:
        """``"model"``: inputs not at the model's size follow the model's own preprocessing (default);
        ``"squash"``: straight to the model size without antialias (counterclip's earlier behaviour)."""
        return "model" if self.geometry is self.model_geometry else "squash"

    @resize_mode.setter
    def resize_mode(self, mode: str) -> None:
        if mode not in RESIZE_CHOICES:
            raise ValueError(f"unknown resize mode {mode!r}; valid: {', '.join(RESIZE_CHOICES)}")
        self.geometry = self.model_geometry if mode == "model" else squash(self.image_size, self.interpolation)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return count_image(self.visual(self.preprocess(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_image(x)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        return self._text_fn(list(texts))

    # -- prompts from token embeddings (learnable contexts, CoOp-style: R-TPT) --------------------------------
    # A backend's text object (``text_fn``) may offer ``tokenize(texts)``, ``embed(ids)`` and
    # ``encode_embeddings(embeds, tokens)``: access to its text tower below the tokenizer.
    def _prompts(self):
        if not all(hasattr(self._text_fn, m) for m in ("tokenize", "embed", "encode_embeddings")):
            raise NotImplementedError(f"{self.name or type(self).__name__}: this backend gives no access to the "
                                      "text tower's token embeddings (needed for a learnable prompt context)")
        return self._text_fn

    def tokenize(self, texts: Sequence[str]) -> dict:
        """``{"ids": LongTensor (N, L), "attention_mask": LongTensor (N, L) or None}`` on the model's device."""
        return self._prompts().tokenize(list(texts))

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (N, L, D) of ``ids``, without positions: what a learnable context replaces."""
        return self._prompts().embed(ids)

    def encode_text_embeddings(self, embeds: torch.Tensor, tokens: dict) -> torch.Tensor:
        """The text tower on token embeddings ``embeds`` (N, L, D) laid out as ``tokens`` (which give the pooling
        position and the padding): unnormalised text features (N, E), differentiable in ``embeds``; weights stay
        frozen. ``encode_text_embeddings(embed_tokens(t["ids"]), t)`` equals ``encode_text`` on the same texts."""
        return self._prompts().encode_embeddings(embeds, tokens)

    def encode_image_base(self, x: torch.Tensor) -> torch.Tensor:
        """Encode with the original (pre-finetuning) vision tower; TTC's tau encoder on robust finetuned models
        (spec section 2). Only when a ``vision_checkpoint`` replaced the tower."""
        if self.base_visual is None:
            raise ValueError("this model has no separate base vision tower (no vision_checkpoint was loaded)")
        return count_image(self.base_visual(self.preprocess(x)))

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, pretrained={self.pretrained!r}, image_size={self.image_size}, "
                f"logit_scale={self.logit_scale:.2f}, vision_checkpoint={self.vision_checkpoint!r}, "
                f"activation={self.activation!r}")
