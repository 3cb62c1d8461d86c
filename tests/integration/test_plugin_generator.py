"""The generator contract of docs/extending.md: a plugin that calls torch.randn(..., generator=generator) runs in
the grid (it gets one seeded torch.Generator); a defense that declares per_sample_generators gets the list."""

import re
import sys
from pathlib import Path

import pytest
import torch

import counterclip
from counterclip.defenses import Defended, Defense
from counterclip.rng import per_sample_generators

PAGE = Path(__file__).parents[2] / "docs" / "extending.md"


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    (body,) = re.findall(r"```python noisy_defense.py\n(.*?)```", PAGE.read_text(), re.S)
    folder = tmp_path_factory.mktemp("noisy")
    (folder / "noisy_defense.py").write_text(body)
    sys.path.insert(0, str(folder))
    try:
        import noisy_defense
    finally:
        sys.path.remove(str(folder))
    return noisy_defense.NoisyDefense


def _gens():
    return per_sample_generators(0, "fashion-mnist", range(8), "defense")


def test_the_page_defense_runs_with_per_sample_generators(noisy, classifier, batch):
    x = batch[0][:8]
    d = noisy(sigma=0.2)
    a, b = d(classifier, x, _gens()), d(classifier, x, _gens())
    assert torch.equal(a, b)  # seeded by the per-sample generators
    gens = _gens()
    first, second = d(classifier, x, gens), d(classifier, x, gens)
    assert not torch.equal(first, second)  # fresh draws on every call (what EOT averages over)
    xg = x.clone().requires_grad_(True)
    Defended(d, classifier)(xg, generator=_gens()).sum().backward()  # generic BPDA through it
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_the_page_defense_runs_in_the_grid(noisy, tmp_path):
    recs = counterclip.evaluate(tmp_path, attacks=["pgd"], eps=["8/255"], steps=1, limit=8, batch_size=4,
                                defenses=[noisy()], threat_model="both", eot_samples=2)
    assert {r["threat_model"] for r in recs} == {"oblivious", "adaptive"}


def test_a_defense_that_declares_per_sample_generators_gets_the_list(classifier, batch):
    seen = []

    class PerSample(Defense):
        per_sample_generators = True

        def predict(self, classifier, x, generator=None):
            seen.append(generator)
            return classifier(x)

    class Single(PerSample):
        per_sample_generators = False

        def predict(self, classifier, x, generator=None):
            seen.append(generator)
            return classifier(x)

    gens = _gens()
    PerSample()(classifier, batch[0][:8], gens)
    Single()(classifier, batch[0][:8], gens)
    assert seen[0] is gens and isinstance(seen[1], torch.Generator)
