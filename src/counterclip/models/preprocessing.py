"""The model's own preprocessing geometry, in pixel space and differentiable.

open_clip and Hugging Face preprocess a PIL image: resize (antialiased), centre crop (or pad), to [0,1],
normalise. ``Geometry`` does the resize and crop on a float tensor in [0,1] with ``F.interpolate(...,
antialias=True)`` (PIL's kernels: bicubic a=-0.5, triangle for bilinear, scaled to the downsampling
factor) and clamps to [0,1] after resizing as the uint8 pipelines do, so an image that is not already at the
model's size is embedded as the reference pipeline embeds it, and attacks still get exact gradients.

Modes (open_clip's ``preprocess_cfg.resize_mode`` names; HF's ``size`` dict maps onto them):

* ``shortest``: the shorter side to ``size``, the longer ``int(size * long / short)`` (torchvision and HF
  agree), then a centre crop to ``crop``;
* ``longest``: the longer side to the crop size (``round`` as open_clip's ``ResizeKeepRatio``), then pad with
  ``fill`` and centre crop (open_clip's ``CenterCropOrPad``);
* ``squash``: straight to ``crop`` whatever the aspect ratio. ``legacy_squash=True`` keeps counterclip's
  previous behaviour exactly (no antialias, no clamp).

Crop offsets: torchvision's ``CenterCrop`` rounds ``(h - ch) / 2``; HF's processors floor it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

RESIZE_MODES = ("shortest", "longest", "squash")
# PIL.Image.Resampling values (what HF's processors store as ``resample``) -> F.interpolate modes
PIL_RESAMPLE = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class Geometry:
    resize: str = "shortest"
    size: int = 224  # the target of the shorter side ("shortest"); ignored otherwise
    crop: tuple = (224, 224)  # (h, w): the model's input size
    interpolation: str = "bicubic"
    crop_rounding: str = "round"  # "round" (torchvision) or "floor" (HF)
    fill: float = 0.0  # padding value in [0,1] ("longest")
    antialias: bool = True
    clamp: bool = True
    legacy_squash: bool = False
    squash_size: tuple | None = None  # "squash": the resize target (h, w) before the crop; default: crop

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {self.resize!r}; valid: {', '.join(RESIZE_MODES)}")
        if self.crop_rounding not in ("round", "floor"):
            raise ValueError(f"crop_rounding must be 'round' or 'floor', not {self.crop_rounding!r}")

    def describe(self) -> dict:
        return asdict(self)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[0,1] pixels (B, C, H, W) of any size -> (B, C, *crop)."""
        h, w = x.shape[-2:]
        ch, cw = self.crop
        if (h, w) == (ch, cw):
            return x
        if self.legacy_squash:
            return F.interpolate(x, size=(ch, cw), mode=self.interpolation, align_corners=False)
        if self.resize == "squash":
            return self._crop_or_pad(self._resize(x, self.squash_size or (ch, cw)))
        if self.resize == "shortest":
            short, long = (h, w) if h <= w else (w, h)
            new_short, new_long = self.size, int(self.size * long / short)
            x = self._resize(x, (new_short, new_long) if h <= w else (new_long, new_short))
        else:
            ratio = max(h / ch, w / cw)
            x = self._resize(x, (round(h / ratio), round(w / ratio)))
        return self._crop_or_pad(x)

    def _resize(self, x, size):
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        mode = self.interpolation
        kw = {} if mode.startswith("nearest") else {"align_corners": False, "antialias": self.antialias}
        x = F.interpolate(x, size=tuple(size), mode=mode, **kw)
        return x.clamp(0, 1) if self.clamp else x

    def _crop_or_pad(self, x):
        ch, cw = self.crop
        h, w = x.shape[-2:]
        if ch > h or cw > w:  # open_clip's CenterCropOrPad: pad first, extra pixel right/bottom
            pw, ph = max(cw - w, 0), max(ch - h, 0)
            x = F.pad(x, (pw // 2, (pw + 1) // 2, ph // 2, (ph + 1) // 2), value=self.fill)
            h, w = x.shape[-2:]
        if self.crop_rounding == "round":
            top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
        else:
            top, left = (h - ch) // 2, (w - cw) // 2
        return x[..., top:top + ch, left:left + cw]


def squash(image_size: int, interpolation: str = "bicubic") -> Geometry:
    """counterclip's earlier behaviour: straight to the model size, no antialias, no clamp."""
    return Geometry(resize="squash", size=image_size, crop=(image_size, image_size), interpolation=interpolation,
                    antialias=False, clamp=False, legacy_squash=True)


def from_open_clip(cfg: dict, image_size: int) -> Geometry:
    """From an open_clip ``preprocess_cfg`` (``resize_mode``, ``interpolation``, ``fill_color``)."""
    interp = cfg.get("interpolation") or "bicubic"
    interp = interp if interp in ("bicubic", "bilinear") else "bicubic"  # "random" is bicubic at inference
    mode = cfg.get("resize_mode") or "shortest"
    fill = cfg.get("fill_color", 0) or 0
    return Geometry(resize=mode, size=image_size, crop=(image_size, image_size), interpolation=interp,
                    crop_rounding="round", fill=float(fill) / 255.0)


def from_hf_processor(proc, image_size: int) -> Geometry:
    """From a Hugging Face image processor's ``size`` / ``crop_size`` / ``do_*`` / ``resample`` settings."""
    resample = getattr(proc, "resample", 3)
    resample = int(getattr(resample, "value", resample)) if resample is not None else 3
    if resample not in PIL_RESAMPLE:
        raise ValueError(f"Hugging Face resample={resample} has no differentiable equivalent here; supported: "
                         + ", ".join(f"{k} ({v})" for k, v in PIL_RESAMPLE.items()))
    size = _as_dict(getattr(proc, "size", None))
    crop = _as_dict(getattr(proc, "crop_size", None))
    do_crop = bool(getattr(proc, "do_center_crop", True)) and crop.get("height")
    crop_hw = (int(crop["height"]), int(crop["width"])) if do_crop else (image_size, image_size)
    if not getattr(proc, "do_resize", True):
        mode, target = "squash", image_size
    elif size.get("shortest_edge"):
        mode, target = "shortest", int(size["shortest_edge"])
    else:
        mode, target = "squash", image_size
    squash_to = None
    if mode == "squash" and size.get("height") and getattr(proc, "do_resize", True):
        squash_to = (int(size["height"]), int(size["width"]))
        crop_hw = crop_hw if do_crop else squash_to
    return Geometry(resize=mode, size=target, crop=crop_hw, interpolation=PIL_RESAMPLE[resample],
                    crop_rounding="floor", squash_size=squash_to)


def _as_dict(v) -> dict:
    if v is None:
        return {}
    if isinstance(v, dict):
        return v
    return {k: getattr(v, k) for k in ("shortest_edge", "height", "width", "longest_edge") if getattr(v, k, None)}
