"""R-TPT's test-time views: the image itself and augmented views, each a random resized crop + random
horizontal flip, with AugMix on top (``../shared/spec/peers.md``, R-TPT step 1).

Every random number of a view is drawn from the defense's generator (one block of uniforms per view, so a
sample's views depend only on its own generator), and the work is batched over all views of all images.

AugMix follows the original method at severity 1 (Hendrycks et al., ICLR 2020, as TPT uses it): 3 chains of
1-3 operations from {autocontrast, equalize, posterize, rotate, solarize, shear x/y, translate x/y}, each
operation's level drawn from U(0.1, severity), chains mixed with Dirichlet(1,1,1) weights, and the mix blended
with the view by a Beta(1,1) weight. ``torchvision.transforms.AugMix(severity=1, all_ops=False)`` has the same
operations and mixing but another severity scale: it picks the magnitude bin ``randint(severity)`` = 0 of 10,
so at severity 1 every rotation, shear, translation and solarisation has magnitude zero; its chains are also
shared by a whole batch and drawn from the global RNG. So the operations come from
``torchvision.transforms.functional`` (autocontrast, equalize, posterize) and the geometric ones from one
batched affine resampling, with AugMix's own levels: rotate ``int(3 * level)`` degrees, solarize above
``256 - int(25.6 * level)``, shear ``0.03 * level``, translate ``int(level * side / 30)`` pixels (0 at 28 px,
as the 224-px value scales), posterize to 4 bits, each sign random. Operations run on the view rounded to 8 bits,
as on the PIL images TPT feeds them.

Crops: RandomResizedCrop's box (area U(0.08, 1) of the image, log aspect ratio U(log 3/4, log 4/3), 10 tries,
then the whole image), resampled to the input's side with ``torchvision.ops.roi_align`` (bilinear, adaptive
sampling): differentiable in the pixels, so an adaptive attack gets the gradient of the crops and flips, while
AugMix's operations are straight-through (their derivative is not useful: 8-bit rounding, histograms).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.ops import roi_align

from .. import rng

CROP_TRIES = 10
N_CHAINS, MAX_DEPTH, N_OPS = 3, 3, 9
# uniforms per augmented view: crop tries (2 each), crop position (2), flip (1), AugMix blend (1), chain weights
# (3), per chain a depth (1) and per step an operation, a level and a sign (3)
N_UNIFORMS = 2 * CROP_TRIES + 2 + 1 + 1 + N_CHAINS + N_CHAINS * (1 + 3 * MAX_DEPTH)


def draw(b: int, n_aug: int, generator, device) -> torch.Tensor:
    """The uniforms of ``n_aug`` augmented views per image: (b, n_aug, N_UNIFORMS)."""
    return rng.rand((b, n_aug, N_UNIFORMS), generator, device, torch.float32)


def crop_boxes(u: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """RandomResizedCrop boxes (x1, y1, x2, y2) in pixels, from uniforms (n, 2*CROP_TRIES + 2)."""
    area = h * w
    t = u[:, :2 * CROP_TRIES].view(-1, CROP_TRIES, 2)
    target = area * (0.08 + 0.92 * t[..., 0])
    log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * t[..., 1]
    ratio = torch.exp(log_r)
    cw, ch = torch.sqrt(target * ratio), torch.sqrt(target / ratio)
    ok = (cw <= w) & (ch <= h)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full_like(ok[:, 0], -1, dtype=torch.long))
    rows = torch.arange(len(u), device=u.device)
    cw = torch.where(first >= 0, cw[rows, first.clamp_min(0)], torch.full_like(cw[:, 0], float(w)))
    ch = torch.where(first >= 0, ch[rows, first.clamp_min(0)], torch.full_like(ch[:, 0], float(h)))
    pos = u[:, 2 * CROP_TRIES:2 * CROP_TRIES + 2]
    x1, y1 = pos[:, 0] * (w - cw), pos[:, 1] * (h - ch)
    return torch.stack([x1, y1, x1 + cw, y1 + ch], 1)


def _affine_u8(img: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """Resample uint8 images (n, C, H, W) with per-image 2x3 maps from output to input pixel coordinates
    (pixel centres at i + 0.5), bilinear, zero fill, rounded back to uint8."""
    n, _, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=img.device) + 0.5, torch.arange(w, device=img.device) + 0.5,
                            indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, -1, 3).float()  # (1, HW, 3)
    src = pts @ mats.transpose(1, 2)  # (n, HW, 2)
    grid = torch.stack([2 * src[..., 0] / w - 1, 2 * src[..., 1] / h - 1], -1).view(n, h, w, 2)
    out = F.grid_sample(img.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def _geometric(kind: int, img, level, sign):
    n, _, h, w = img.shape
    m = torch.zeros(n, 2, 3, device=img.device)
    m[:, 0, 0] = m[:, 1, 1] = 1.0
    if kind == 3:  # rotate about the centre by int(3 * level) degrees
        a = torch.floor(level * 3) * sign * math.pi / 180
        c, s = torch.cos(a), torch.sin(a)
        cx, cy = w / 2, h / 2
        m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = c, -s, cx - c * cx + s * cy
        m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = s, c, cy - s * cx - c * cy
    elif kind in (5, 6):  # shear by 0.03 * level (about the origin, as PIL's affine transform)
        m[:, 0 if kind == 5 else 1, 1 if kind == 5 else 0] = level * 0.03 * sign
    else:  # translate by int(level * side / 30) pixels
        side = w if kind == 7 else h
        m[:, 0 if kind == 7 else 1, 2] = torch.floor(level * side / 30) * sign
    return _affine_u8(img, m)


def _equalize(img: torch.Tensor) -> torch.Tensor:
    """``torchvision.transforms.functional.equalize``'s rule, batched over images and channels (torchvision
    loops over them one histogram at a time); ``tests/test_rtpt.py`` checks the two agree."""
    n, c, h, w = img.shape
    flat = img.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=img.device).scatter_add_(1, flat, torch.ones_like(flat))
    last_bin = 255 - (hist.flip(1) != 0).long().argmax(1, keepdim=True)
    step = (hist.sum(1, keepdim=True) - hist.gather(1, last_bin)) // 255
    lut = (hist.cumsum(1) + step // 2) // step.clamp_min(1)
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut[:, :-1]], 1).clamp(0, 255)
    out = torch.where(step == 0, flat, lut.gather(1, flat))
    return out.to(torch.uint8).view(n, c, h, w)


def _op(kind: int, img: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    if kind == 0:
        return TF.autocontrast(img)
    if kind == 1:
        return _equalize(img)
    if kind == 2:  # 4 - int(level * 4 / 10) bits = 4 for every level of severity 1
        return TF.posterize(img, 4)
    if kind == 4:
        thr = (256 - torch.floor(level * 25.6)).view(-1, 1, 1, 1)
        return torch.where(img.to(torch.int16) >= thr, 255 - img, img)
    return _geometric(kind, img, level, sign)


def augmix(v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """AugMix at severity 1 on views ``v`` (n, C, H, W) in [0,1], from uniforms ``u`` (n, N_UNIFORMS); no graph."""
    base = 2 * CROP_TRIES + 3
    m = u[:, base].view(-1, 1, 1, 1)  # Beta(1, 1)
    e = -torch.log(u[:, base + 1:base + 1 + N_CHAINS].clamp_min(1e-12))
    ws = e / e.sum(1, keepdim=True)  # Dirichlet(1, 1, 1)
    u8 = (v.detach() * 255).round().clamp(0, 255).to(torch.uint8)
    mix = torch.zeros_like(v, dtype=torch.float32)
    off = base + 1 + N_CHAINS
    for c in range(N_CHAINS):
        cu = u[:, off + c * (1 + 3 * MAX_DEPTH):off + (c + 1) * (1 + 3 * MAX_DEPTH)]
        depth = 1 + torch.floor(cu[:, 0] * MAX_DEPTH).long().clamp(max=MAX_DEPTH - 1)
        img = u8.clone()
        for j in range(MAX_DEPTH):
            op = torch.floor(cu[:, 1 + 3 * j] * N_OPS).long().clamp(max=N_OPS - 1)
            level = 0.1 + 0.9 * cu[:, 2 + 3 * j]
            sign = torch.where(cu[:, 3 + 3 * j] < 0.5, -1.0, 1.0)
            for k in range(N_OPS):
                sel = ((op == k) & (j < depth)).nonzero().flatten()
                if len(sel):
                    img[sel] = _op(k, img[sel], level[sel], sign[sel])
        mix = mix + ws[:, c].view(-1, 1, 1, 1) * img.float() / 255
    return ((1 - m) * v.detach() + m * mix).to(v.dtype)


def make_views(x: torch.Tensor, n_views: int, generator=None, use_augmix: bool = True,
               uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """(b, n_views, C, H, W): view 0 is the image itself, the others crop + flip (+ AugMix). Differentiable in
    ``x`` through the crops and flips; AugMix is straight-through (its output minus its input is a constant)."""
    b, c, h, w = x.shape
    n_aug = n_views - 1
    if n_aug == 0:
        return x.unsqueeze(1)
    u = draw(b, n_aug, generator, x.device) if uniforms is None else uniforms
    flat = u.reshape(b * n_aug, -1)
    boxes = crop_boxes(flat, h, w)
    idx = torch.arange(b, device=x.device).repeat_interleave(n_aug).to(boxes.dtype)
    crops = roi_align(x, torch.cat([idx[:, None], boxes], 1).to(x.dtype), output_size=(h, w), spatial_scale=1.0,
                      sampling_ratio=-1, aligned=True)
    flip = (flat[:, 2 * CROP_TRIES + 2] < 0.5).view(-1, 1, 1, 1)
    crops = torch.where(flip, crops.flip(-1), crops)
    if use_augmix:
        mixed = augmix(crops, flat)
        crops = crops + (mixed - crops).detach()
    return torch.cat([x.unsqueeze(1), crops.view(b, n_aug, c, h, w)], 1)
