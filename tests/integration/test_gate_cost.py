"""Defenses describe themselves (gate, differentiable modes) and their encoder passes are counted."""

from __future__ import annotations

import torch

from counterclip.cost import PassCounter
from counterclip.defenses import TTC, AntiAdversary, NoDefense, RandomNoise, TTE
from counterclip.defenses.base import Defense, gate_passes
from counterclip.evaluation.describe import adaptive_attacks_for


def test_pass_counter_counts_ttc_passes(classifier, batch):
    x = batch[0][:8]
    g = torch.Generator().manual_seed(0)
    with PassCounter() as c:  # nothing counterattacked: f(x) and f(x + delta0), the final embedding reused
        TTC(tau_thres=0.0)(classifier, x, g)
    assert (c.image_forwards, c.image_backwards) == (16, 0)
    with PassCounter() as c:  # everything: anchor, delta0 pass recorded and reused as step 1, step 2, final
        TTC(tau_thres=float("inf"))(classifier, x, g)
    assert (c.image_forwards, c.image_backwards) == (32, 16)
    assert c.per_image(8)["image_backwards_per_image"] == 2.0
    with PassCounter() as c:
        classifier(x)
    assert c.image_forwards == 8 and c.text_forwards == 0


def test_adaptive_attacks_follow_the_description():
    assert adaptive_attacks_for(TTC()) == ["eot-pgd", "bpda-pgd", "tau-aware"]
    assert adaptive_attacks_for(TTC(tau_thres=float("inf"))) == ["eot-pgd", "bpda-pgd"]
    assert adaptive_attacks_for(RandomNoise()) == ["eot-pgd"]
    assert adaptive_attacks_for(TTE()) == ["eot-pgd"]
    assert adaptive_attacks_for(AntiAdversary()) == ["eot-pgd", "bpda-pgd"]
    assert adaptive_attacks_for(NoDefense()) == []

    class Old(Defense):  # written against the old protocol: no hooks, still works
        def predict(self, classifier, x, generator=None):
            return classifier(x)

    assert adaptive_attacks_for(Old()) == ["bpda-pgd"]  # no gradient of its own: generic BPDA (issue 10)
    assert Old().gate_score(None, None) is None and Old().gate_threshold is None


def test_gate_direction():
    s = torch.tensor([0.1, 0.5, 0.9])

    class Below(Defense):
        gate_threshold = 0.5

    class Above(Defense):
        gate_threshold, gate_purifies = 0.5, "above"

    assert gate_passes(Below(), s).tolist() == [False, True, True]
    assert gate_passes(Above(), s).tolist() == [True, True, False]


def test_quantize_stage():
    from counterclip.evaluation.quantize import serialise

    x = torch.tensor([[0.2, 0.5, 0.0, 1.0]]).mul(255).round().div(255)
    adv = x + torch.tensor([[0.4, 0.6, 3.2, -2.5]]) / 255
    eps = 2 / 255
    assert torch.equal(serialise(x, adv, eps, "none"), adv)
    r = serialise(x, adv, eps, "round")
    t = serialise(x, adv, eps, "truncate")
    assert torch.allclose(r * 255, (r * 255).round(), atol=1e-4) and torch.allclose(t * 255, (t * 255).round(), atol=1e-4)
    assert torch.allclose((t - x)[0, 0], torch.tensor(0.0), atol=1e-6)  # a +0.4/255 change is erased by truncation
    assert torch.allclose((r - x)[0, 1] * 255, torch.tensor(1.0), atol=1e-4)  # and rounded up to 1/255
    for q in (r, t):  # back inside the eps-ball and [0,1]
        assert (q - x).abs().max() <= eps + 1e-7 and q.min() >= 0 and q.max() <= 1
