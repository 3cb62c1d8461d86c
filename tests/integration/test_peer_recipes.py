"""The peers' recipes as their authors' code runs them (issue 20): R-TPT's views on the ImageNet family (no AugMix,
and the record says so), MAC's augmentation at the input's own size (a real blur at 28 px, whole-pixel
translations, a random jitter order) and its seeding."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torchvision.transforms.functional as TF

from counterclip.data.aliases import imagenet_family
from counterclip.defenses import MAC, RTPT
from counterclip.defenses import _mac_augment as A
from counterclip.defenses._views import make_views
from counterclip.defenses.base import for_dataset
from counterclip.evaluation.config import EvalConfig
from counterclip.evaluation.grid import GridRunner

pytestmark = pytest.mark.usefixtures("one_thread")


def gens(n, offset=0):
    return [torch.Generator().manual_seed(offset + i) for i in range(n)]


@pytest.mark.parametrize("name,family", [
    ("imagenet", True), ("imagenet1k", True), ("wds/imagenet1k", True), ("wds/imagenet-a", True),
    ("wds/imagenet-r", True), ("wds/imagenetv2", True), ("wds/imagenet_sketch", True), ("ImageNet", True),
    ("tinyimagenet", False), ("cifar10", False), ("fashion-mnist", False), ("imagefolder", False)])
def test_imagenet_family(name, family):
    assert imagenet_family(name) is family


def test_rtpt_views_follow_the_authors_imagenet_rule(batch):
    x = batch[0][:2]
    r = RTPT(views=6)
    assert r.params()["view_recipe"] == "augmix"  # no dataset named: the paper's default
    on_imagenet, on_cifar = for_dataset(r, "imagenet"), for_dataset(r, "cifar10")
    assert on_imagenet.params()["view_recipe"] == "crops" and on_cifar.params()["view_recipe"] == "augmix"
    assert r.params()["view_recipe"] == "augmix"  # the grid's copy is bound, the instance is not
    crops = on_imagenet.views(x, gens(2))
    assert torch.equal(crops, make_views(x, 6, gens(2), use_augmix=False))
    assert not torch.equal(crops, on_cifar.views(x, gens(2)))
    assert for_dataset(RTPT(view_recipe="augmix"), "imagenet").params()["view_recipe"] == "augmix"  # as asked
    assert for_dataset(RTPT(view_recipe="crops"), "cifar10").params()["view_recipe"] == "crops"
    with pytest.raises(ValueError):
        RTPT(view_recipe="noaugmix")
    assert for_dataset(MAC(), "imagenet").params() == MAC().params()  # a defense without a dataset rule


def test_grid_runs_rtpt_on_imagenet_without_augmix(tmp_path, monkeypatch, fmnist_test):
    """The grid binds the defense to the dataset it evaluates: the ImageNet record says "crops"."""
    import counterclip.data as data

    as_imagenet = dataclasses.replace(fmnist_test, name="imagenet")
    monkeypatch.setattr(data, "get_dataset", lambda name, **kw: as_imagenet if name == "imagenet" else
                        fmnist_test)
    cfg = EvalConfig(output=str(tmp_path), datasets=["imagenet", "fashion-mnist"], attacks=["none"], eps=["4/255"],
                     defenses=["rtpt"], defense_args={"rtpt": {"views": 4}}, limit=2, batch_size=2, seed=0,
                     probe_size=2)
    GridRunner(cfg, log=lambda *a: None).run()
    recipes = {}
    for p in tmp_path.rglob("*.json"):
        if ".state" not in p.parts:
            rec = json.loads(p.read_text())
            if rec.get("defense", {}).get("name") == "rtpt":
                recipes[rec["dataset"]] = rec["defense"]["params"]["view_recipe"]
    assert recipes == {"imagenet": "crops", "fashion-mnist": "augmix"}


def only(draw: A.Draw, **on) -> A.Draw:
    """``draw`` with the identity geometry and only the named stages switched on."""
    b = len(draw.angle)
    off = torch.zeros(b, dtype=torch.bool)
    return dataclasses.replace(draw, angle=torch.zeros(b), translate=torch.zeros(b, 2), scale=torch.ones(b),
                               jitter=on.get("jitter", off), blur=on.get("blur", off), noise=on.get("noise", off))


def test_mac_blur_at_28px_is_the_authors_kernel_not_an_identity(batch):
    x = batch[0][:8]
    d = A.draw(x.shape, torch.Generator().manual_seed(0))
    assert ((d.sigma >= 0.5) & (d.sigma <= 1.2)).all()
    on = torch.ones(len(x), dtype=torch.bool)
    blurred = A.apply(x, only(d, blur=on))
    for i in range(len(x)):
        s = float(d.sigma[i])
        assert torch.allclose(blurred[i], TF.gaussian_blur(x[i], [5, 5], [s, s]), atol=1e-6)
    assert (blurred - x).abs().amax() > 0.05  # a visible blur on 28-px images
    assert torch.allclose(A.apply(x, only(d)), x, atol=1e-5)  # the identity geometry (grid sampling)
    # the size-scaled option (kernel 3, sigma 0.06-0.15 px at 28 px) is an identity there, which is why it is not
    # the default
    assert torch.allclose(A.apply(x, only(d, blur=on), blur="scaled"), x, atol=1e-5)
    with pytest.raises(ValueError):
        MAC(blur="gaussian")


def test_mac_translations_are_whole_pixels(batch):
    x = batch[0][:4]
    d = A.draw((256, 3, 28, 28), torch.Generator().manual_seed(1))
    assert torch.equal(d.translate, d.translate.round()) and d.translate.abs().max() == 1  # round(0.04 * 28)
    assert (d.translate != 0).float().mean() > 0.3
    shift = only(A.draw(x.shape, torch.Generator().manual_seed(2)))
    shift.translate = torch.tensor([[1.0, 0.0]] * len(x))
    moved = A.apply(x, shift)
    assert torch.allclose(moved[..., 1:], x[..., :-1], atol=1e-5)  # exactly one pixel to the right
    assert moved[..., 0].abs().max() < 1e-6  # zero fill


def test_mac_jitter_order_varies_with_the_generator(batch):
    x = batch[0][:2]
    d = A.draw((64, 3, 28, 28), torch.Generator().manual_seed(3))
    assert all(sorted(o) == [0, 1, 2, 3] for o in d.order.tolist())
    assert len({tuple(o) for o in d.order.tolist()}) > 6
    # the order matters: brightness then contrast is not contrast then brightness
    two = only(A.draw(x.shape, torch.Generator().manual_seed(4)), jitter=torch.ones(2, dtype=torch.bool))
    two.factors = torch.tensor([[1.3, 0.5, 1.0, 0.0]] * 2)
    a = dataclasses.replace(two, order=torch.tensor([[0, 1, 2, 3]] * 2))
    b = dataclasses.replace(two, order=torch.tensor([[1, 0, 2, 3]] * 2))
    assert not torch.allclose(A.apply(x, a), A.apply(x, b), atol=1e-3)


def test_mac_augmentation_is_seeded_per_sample_and_differentiable(batch):
    x = batch[0][:4]
    mac = MAC()
    out = mac.augment(x, gens(4))
    assert torch.equal(out, mac.augment(x, gens(4)))  # same generators, same output
    assert not torch.equal(out, mac.augment(x, gens(4, 100)))
    assert torch.equal(mac.augment(x[2:3], gens(1, 2)), out[2:3])  # a sample's draw does not depend on the batch
    g = torch.Generator().manual_seed(5)
    assert torch.equal(mac.augment(x, g), mac.augment(x, torch.Generator().manual_seed(5)))
    assert out.min() >= 0 and out.max() <= 1
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mac.augment(xr, gens(4)).sum(), xr)
    assert grad.abs().sum() > 0
    assert mac.params()["blur"] == "fixed" and MAC(blur="scaled").params()["blur"] == "scaled"
