"""MAC's augmentation (``../shared/spec/peers.md``, MAC), as the authors' code builds it: torchvision's tensor
transforms applied to each image at its own size, with every random number drawn from the defense's generator.

In order, with the authors' parameters:

* RandomAffine (always): rotation U(-5, 5) degrees, translation ``round(U(-0.04, 0.04) * side)`` *whole* pixels
  (torchvision rounds; 0 or +-1 px at 28 px), scale U(0.92, 1.08), bilinear, zero fill;
* ColorJitter(0.08, 0.08, 0.08, 0.02) with probability 0.5, its four adjustments in a random order per image
  (as ``ColorJitter`` permutes them on each call);
* GaussianBlur(kernel 5, sigma U(0.5, 1.2) px) with probability 0.5: the authors build it with those pixel
  values whatever the input's size. ``blur="scaled"`` (counterclip's earlier default) scales kernel and sigma by
  ``side / 224`` instead (kernel 3, sigma 0.06-0.15 px at 28 px: an identity there);
* additive Gaussian noise, sigma U(0, 0.02), with probability 0.5, then clipped to [0, 1].

The draws (``draw``) are separate from their application (``apply``), so a test can apply the parameters the
authors' pipeline drew. ``apply`` runs ``torchvision.transforms.functional``'s affine and colour operations
image by image (each image has its own parameters) and the blur and noise batched: the same arithmetic as the
authors' transforms (to 1e-6), and differentiable in the pixels (affine grid sampling, blends, convolution,
additive noise), which MAC's "full" adaptive mode needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from .. import rng

BLURS = ("fixed", "scaled")
DEGREES, TRANSLATE, SCALE = 5.0, 0.04, (0.92, 1.08)
JITTER = (0.08, 0.08, 0.08, 0.02)  # brightness, contrast, saturation, hue
KERNEL, SIGMA = 5, (0.5, 1.2)
NOISE_SIGMA = 0.02
N_UNIFORMS = 17


@dataclass
class Draw:
    """One augmentation's parameters per image (tensors with a leading batch dimension)."""

    angle: torch.Tensor  # degrees
    translate: torch.Tensor  # (b, 2) whole pixels (x, y)
    scale: torch.Tensor
    jitter: torch.Tensor  # bool: ColorJitter applied
    order: torch.Tensor  # (b, 4): a permutation of 0..3 (brightness, contrast, saturation, hue)
    factors: torch.Tensor  # (b, 4): brightness, contrast, saturation factors and the hue shift
    blur: torch.Tensor  # bool
    sigma: torch.Tensor  # px, before any scaling
    noise: torch.Tensor  # bool
    noise_sigma: torch.Tensor
    z: torch.Tensor  # (b, C, H, W) standard normal


def _between(u, lo, hi):
    return lo + (hi - lo) * u


def draw(shape, generator=None, device="cpu") -> Draw:
    """The parameters of one augmentation of each of ``shape[0]`` images of ``shape`` (b, C, H, W)."""
    b, _, h, w = shape
    u = rng.rand((b, N_UNIFORMS), generator, device, torch.float32)
    z = rng.randn(tuple(shape), generator, device, torch.float32)
    half = torch.tensor([TRANSLATE * w, TRANSLATE * h], device=device)
    return Draw(angle=_between(u[:, 0], -DEGREES, DEGREES),
                translate=torch.round(_between(u[:, 1:3], -half, half)),  # as torchvision: int(round(U))
                scale=_between(u[:, 3], *SCALE),
                jitter=u[:, 4] < 0.5,
                order=u[:, 5:9].argsort(1),  # a uniformly random permutation, as torch.randperm(4)
                factors=torch.stack([_between(u[:, 9 + i], 1 - j, 1 + j) for i, j in enumerate(JITTER[:3])]
                                    + [_between(u[:, 12], -JITTER[3], JITTER[3])], 1),
                blur=u[:, 13] < 0.5, sigma=_between(u[:, 14], *SIGMA),
                noise=u[:, 15] < 0.5, noise_sigma=_between(u[:, 16], 0.0, NOISE_SIGMA), z=z)


_ADJUST = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def apply(x: torch.Tensor, d: Draw, blur: str = "fixed") -> torch.Tensor:
    """Augment images ``x`` (b, C, H, W) in [0, 1] with parameters ``d``; differentiable in ``x``."""
    if blur not in BLURS:
        raise ValueError(f"blur must be one of {', '.join(BLURS)}, not {blur!r}")
    c, h, w = x.shape[1:]
    k = KERNEL if blur == "fixed" else max(3, int(round(KERNEL * w / 224)) | 1)
    px = 1.0 if blur == "fixed" else w / 224
    p = {f: getattr(d, f).tolist() for f in ("angle", "translate", "scale", "jitter", "order", "factors")}
    out = []
    for i, img in enumerate(x):  # one device sync above, not one per image
        img = TF.affine(img, angle=p["angle"][i], translate=[int(t) for t in p["translate"][i]],
                        scale=p["scale"][i], shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR,
                        fill=[0.0] * c)  # RandomAffine's fill=0 on a tensor: a per-channel list (masked blend)
        if p["jitter"][i]:
            for op in p["order"][i]:
                img = _ADJUST[op](img, p["factors"][i][op])
        out.append(img)
    out = torch.stack(out)
    idx = d.blur.nonzero().flatten()
    if len(idx):
        out = out.index_put((idx,), _gaussian_blur(out[idx], d.sigma[idx].to(out) * px, k))
    noisy = (out + d.z.to(out) * d.noise_sigma.to(out).view(-1, 1, 1, 1)).clamp(0, 1)
    return torch.where(d.noise.view(-1, 1, 1, 1), noisy, out)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, k: int) -> torch.Tensor:
    """``TF.gaussian_blur(x[i], [k, k], [sigma[i]] * 2)`` for every image at once (one grouped convolution
    instead of one call per image, which cost a third of the augmentation): the same separable kernel
    ``exp(-t^2 / (2 sigma^2))`` on ``t = -(k-1)/2 .. (k-1)/2``, normalised, and reflect padding."""
    n, c, h, w = x.shape
    t = torch.linspace(-(k - 1) / 2, (k - 1) / 2, k, dtype=x.dtype, device=x.device)
    pdf = torch.exp(-0.5 * (t / sigma.view(-1, 1)).pow(2))
    k1 = pdf / pdf.sum(-1, keepdim=True)
    kern = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(c, 0).unsqueeze(1)  # (n*c, 1, k, k)
    padded = F.pad(x.reshape(1, n * c, h, w), [k // 2] * 4, mode="reflect")
    return F.conv2d(padded, kern, groups=n * c).view(n, c, h, w)


def augment(x: torch.Tensor, generator=None, blur: str = "fixed") -> torch.Tensor:
    """One fresh augmentation per image (module docstring)."""
    return apply(x, draw(x.shape, generator, x.device), blur)
