"""encode_image follows the model's own preprocessing geometry for inputs not at the model's size, and leaves
inputs at the model's size (the paper preset's, the grid's) exactly as before."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import counterclip
from counterclip.models.preprocessing import Geometry, squash


def _pil(x):
    from PIL import Image

    return Image.fromarray((x.permute(1, 2, 0) * 255).round().byte().numpy())


def _uint8_image(h, w, seed):
    # uint8-valued pixels, so that the PIL reference sees exactly the same image
    return torch.randint(0, 256, (1, 3, h, w), generator=torch.Generator().manual_seed(seed)).float() / 255


@pytest.fixture(scope="module")
def vit_b32():
    return counterclip.load_model("ViT-B-32", pretrained="random")


def test_open_clip_vit_b32_matches_its_own_preprocess_on_a_375x500_image(vit_b32):
    import open_clip

    preprocess = open_clip.image_transform(vit_b32.image_size, is_train=False)
    assert vit_b32.geometry.resize == "shortest" and vit_b32.geometry.interpolation == "bicubic"
    for h, w, seed in ((375, 500, 0), (500, 375, 1), (150, 100, 2)):  # down- and upsampling, both orientations
        x = _uint8_image(h, w, seed)
        with torch.no_grad():
            ref = vit_b32.visual(preprocess(_pil(x[0]))[None])
            ours = vit_b32.encode_image(x)
        assert F.cosine_similarity(ours, ref).item() > 0.9999, (h, w)
    vit_b32.resize_mode = "squash"
    try:
        with torch.no_grad():
            squashed = vit_b32.encode_image(x)
        assert F.cosine_similarity(squashed, ref).item() < 0.9999  # the old behaviour, kept as an option
        legacy = F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False)
        assert torch.equal(vit_b32.preprocess(x), (legacy - vit_b32.mean) / vit_b32.std)
    finally:
        vit_b32.resize_mode = "model"


def test_inputs_at_the_model_size_are_only_normalised(tiny_model, vit_b32):
    for model in (tiny_model, vit_b32):
        s = model.image_size
        x = _uint8_image(s, s, 3)
        want = (x - model.mean) / model.std
        for mode in ("model", "squash"):
            model.resize_mode = mode
            assert torch.equal(model.preprocess(x), want)
        model.resize_mode = "model"
    with pytest.raises(ValueError, match="valid: model, squash"):
        tiny_model.resize_mode = "stretch"


def test_the_paper_preset_feeds_model_size_images():
    """The paper preset resizes and crops in the data pipeline (Resize(256) + CenterCrop(224)), so the model
    only normalises: its geometry never runs on the grid's images."""
    from counterclip.data import pil_transform
    from counterclip.evaluation.config import PRESETS

    paper = PRESETS["paper"]
    x = pil_transform(paper["image_size"], paper["resize"])(_pil(_uint8_image(375, 500, 5)[0]))
    assert tuple(x.shape) == (3, paper["image_size"], paper["image_size"])


def test_geometry_is_differentiable_clamps_and_crops_like_torchvision():
    import torchvision.transforms.functional as TF

    g = Geometry(size=8, crop=(8, 8))
    x = _uint8_image(11, 16, 4).requires_grad_(True)
    y = g(x)
    assert y.shape[-2:] == (8, 8) and 0 <= y.min() and y.max() <= 1
    y.sum().backward()
    assert x.grad.abs().sum() > 0
    resized = TF.resize(x.detach(), 8, interpolation=TF.InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
    assert torch.allclose(y.detach(), TF.center_crop(resized, [8, 8]), atol=1e-6)
    assert squash(8)(x).shape[-2:] == (8, 8)
    longest = Geometry(resize="longest", crop=(8, 8), fill=0.5)(x.detach())
    assert longest.shape[-2:] == (8, 8) and torch.all(longest[..., 0, :] == 0.5)  # padded top row
