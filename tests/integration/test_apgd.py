"""APGD (Croce & Hein, 2020): contract, determinism and strength against PGD (torchattacks: tests/reference)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import counterclip
import counterclip.data
from counterclip import rng
from counterclip.attacks import PGD, build_attack
from counterclip.attacks.apgd import APGD, checkpoints

N_SMALL, N_CMP = 8, 64


@pytest.fixture(scope="module")
def fmnist():
    return counterclip.data.get_dataset("fashion-mnist")


@pytest.fixture(scope="module")
def clip_model():
    return counterclip.load_model("tiny-fmnist")


@pytest.fixture(scope="module")
def classifier(clip_model, fmnist):
    return counterclip.ZeroShotClassifier(clip_model, fmnist.classnames, ["a photo of a {}."])


@pytest.fixture(scope="module")
def batch(fmnist):
    items = [fmnist.dataset[i] for i in range(N_CMP)]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def accuracy(classifier, x, y) -> int:
    with torch.no_grad():
        return int((classifier(x).argmax(-1) == y).sum())


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Recorder(nn.Module):
    """Wraps a classifier and records every input it is asked to classify, with the predictions."""

    def __init__(self, classifier):
        super().__init__()
        self.inner = classifier
        self.num_classes = classifier.num_classes
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x):
        logits = self.inner(x)
        self.calls.append((x.detach().clone(), logits.detach().argmax(-1)))
        return logits


def test_checkpoints_follow_the_paper():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (intervals shrink by .03 down to .06); w_j = ceil(p_j * N)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [3, 5, 6, 7, 8, 9]
    assert checkpoints(1) == []


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_stays_in_ball_and_box(classifier, batch, norm, loss):
    x, y = batch[0][:N_SMALL], batch[1][:N_SMALL]
    eps = 8 / 255 if norm == "linf" else 0.5
    x_adv = APGD(eps, steps=5, norm=norm, loss=loss)(classifier, x, y, gen())
    assert x_adv.shape == x.shape and x_adv.dtype == torch.float32
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
    else:
        assert delta.norm(dim=1).max() <= eps + 1e-5
    assert delta.abs().max() > 0  # it moved


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_eps_zero_returns_input(classifier, batch, loss):
    x, y = batch[0][:N_SMALL], batch[1][:N_SMALL]
    assert torch.equal(APGD(0, steps=5, loss=loss)(classifier, x, y), x)


@pytest.mark.slow
def test_same_seed_same_output(classifier, batch):
    x, y = batch[0][:N_SMALL], batch[1][:N_SMALL]
    atk = APGD(8 / 255, steps=5, restarts=2)
    assert torch.equal(atk(classifier, x, y, gen(3)), atk(classifier, x, y, gen(3)))
    per_sample = lambda: rng.per_sample_generators(0, "fashion-mnist", range(N_SMALL))  # noqa: E731
    assert torch.equal(atk(classifier, x, y, per_sample()), atk(classifier, x, y, per_sample()))
    # the constructor's generator is used when none is passed
    a, b = APGD(8 / 255, steps=5, generator=gen(3)), APGD(8 / 255, steps=5, generator=gen(3))
    assert torch.equal(a(classifier, x, y), b(classifier, x, y))


def test_dlr_on_two_classes_raises_before_any_work(clip_model, batch):
    binary = Recorder(counterclip.ZeroShotClassifier(clip_model, ["T-shirt/top", "Trouser"], ["a photo of a {}."]))
    x, y = batch[0][:4], torch.tensor([0, 1, 0, 1])
    for eps in (8 / 255, 0):
        with pytest.raises(ValueError, match="at least 3 classes"):
            APGD(eps, steps=5, loss="dlr")(binary, x, y, gen())
    assert binary.calls == []
    with pytest.raises(ValueError, match="at least 3 classes"):  # also via the CLI's factory
        build_attack("apgd-dlr", 8 / 255, steps=5)(binary, x, y)
    # a classifier that does not state its class count still gets the clear error
    with pytest.raises(ValueError, match="at least 3 classes"):
        APGD(8 / 255, steps=5, loss="dlr")(lambda t: binary.inner(t), x, y)
    # APGD-CE is fine on a binary task
    x_adv = APGD(8 / 255, steps=3, loss="ce")(binary, x, y, gen())
    assert x_adv.shape == x.shape


def test_weights_get_no_grad(classifier, batch):
    x, y = batch[0][:N_SMALL], batch[1][:N_SMALL]
    for loss in ("ce", "dlr"):
        APGD(8 / 255, steps=3, loss=loss)(classifier, x, y, gen())
    assert all(p.grad is None for p in classifier.parameters())
    assert not x.requires_grad


def test_returns_a_misclassified_point_whenever_one_was_found(classifier, batch):
    x, y = batch[0][:16], batch[1][:16]
    rec = Recorder(classifier)
    x_adv = APGD(4 / 255, steps=10)(rec, x, y, gen())
    ever_fooled = torch.zeros(len(y), dtype=torch.bool)
    for _, pred in rec.calls:
        ever_fooled |= pred != y
    with torch.no_grad():
        fooled = classifier(x_adv).argmax(-1) != y
    assert ever_fooled.any()
    assert torch.equal(fooled, ever_fooled)


@pytest.mark.slow
def test_restarts_never_weaken(classifier, batch):
    x, y = batch[0][:32], batch[1][:32]
    one = accuracy(classifier, APGD(4 / 255, steps=5, restarts=1)(classifier, x, y, gen()), y)
    two = accuracy(classifier, APGD(4 / 255, steps=5, restarts=2)(classifier, x, y, gen()), y)
    assert two <= one


def test_build_attack_and_config():
    ce, dlr = build_attack("apgd-ce", "4/255", steps=20, norm="l2"), build_attack("apgd-dlr", "4/255")
    assert isinstance(ce, APGD) and isinstance(dlr, APGD)
    assert (ce.name, dlr.name) == ("apgd-ce", "apgd-dlr")
    cfg = ce.config()
    assert cfg["name"] == "apgd-ce" and cfg["eps_str"] == "4/255" and cfg["norm"] == "l2"
    assert (cfg["steps"], cfg["loss"], cfg["restarts"], cfg["rho"]) == (20, "ce", 1, 0.75)
    with pytest.raises(ValueError):
        APGD(1 / 255, loss="cw")
    with pytest.raises(ValueError):
        APGD(1 / 255, restarts=0)


@pytest.mark.slow
def test_apgd_ce_at_least_as_strong_as_pgd(classifier, batch):
    x, y = batch
    eps = 8 / 255
    clean = accuracy(classifier, x, y)
    pgd = accuracy(classifier, PGD(eps, steps=10, step_size="auto")(classifier, x, y, gen()), y)
    apgd = accuracy(classifier, APGD(eps, steps=10)(classifier, x, y, gen()), y)
    print(f"clean {clean}/{len(y)}  PGD-10(auto) {pgd}/{len(y)}  APGD-CE-10 {apgd}/{len(y)}")
    assert apgd < clean
    assert apgd <= pgd + 1
