"""Dev-only yardstick: our PGD and APGD-CE are at least as strong as torchattacks 3.5.1's on the same images
(`pip install --no-deps torchattacks==3.5.1`; skipped when it is absent)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from counterclip.attacks import PGD
from counterclip.attacks.apgd import APGD


def accuracy(classifier, x, y) -> int:
    with torch.no_grad():
        return int((classifier(x).argmax(-1) == y).sum())


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _Logits(nn.Module):
    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(x)


@pytest.mark.slow
def test_apgd_ce_at_least_as_strong_as_torchattacks(classifier, batch):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = batch
    eps = 8 / 255
    ours = accuracy(classifier, APGD(eps, steps=10, loss="ce")(classifier, x, y, gen()), y)
    ta = torchattacks.APGD(_Logits(classifier), norm="Linf", eps=eps, steps=10, n_restarts=1, loss="ce", seed=0)
    theirs = accuracy(classifier, ta(x, y), y)
    print(f"APGD-CE-10 eps=8/255: counterclip {ours}/{len(y)}  torchattacks {theirs}/{len(y)}")
    assert ours <= theirs + 1
    assert all(p.grad is None for p in classifier.parameters())


@pytest.mark.slow
def test_pgd_at_least_as_strong_as_torchattacks(classifier, batch):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = batch
    eps = 4 / 255
    ours = accuracy(classifier, PGD(eps, steps=10, step_size=1 / 255)(classifier, x, y, gen()), y)
    torch.manual_seed(0)
    ta = torchattacks.PGD(_Logits(classifier), eps=eps, alpha=1 / 255, steps=10, random_start=True)
    theirs = accuracy(classifier, ta(x, y), y)
    print(f"PGD-10 eps=4/255 step 1/255: counterclip {ours}/{len(y)}  torchattacks {theirs}/{len(y)}")
    assert ours <= theirs + 1
