"""The peer test-time defenses (CSR, MAC): the fast implementations equal their literal transcriptions given
the same randomness, count fewer passes, describe their gates, and the gate-aware attack opens those gates."""

from __future__ import annotations

import pytest
import torch

from counterclip.attacks import PGD
from counterclip.attacks.adaptive import GateAwarePGD
from counterclip.cost import PassCounter
from counterclip.defenses import CSR, MAC, Defended
from counterclip.defenses.base import gate_passes
from counterclip.defenses.csr import low_pass
from counterclip.defenses.csr_reference import reference_csr_logits, reference_low_pass
from counterclip.defenses.mac_reference import reference_mac_logits
from counterclip.evaluation.describe import adaptive_attacks_for

N = 16
EPS = 4 / 255


def gen(seed):
    return torch.Generator().manual_seed(seed)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def data(batch):
    return batch[0][:N].clone(), batch[1][:N].clone()


@pytest.fixture(scope="module")
def x_adv(classifier, data):
    x, y = data
    return PGD(EPS, steps=10, step_size=1 / 255)(classifier, x, y, generator=gen(0))


@pytest.fixture(scope="module")
def held_out():
    from counterclip.data import get_dataset

    return get_dataset("fashion-mnist", split="train").dataset.x[:128]


def test_low_pass_keeps_constants_and_scales_its_radius(data):
    x = data[0][:4]
    flat = torch.full((2, 3, 28, 28), 0.3)
    assert torch.allclose(low_pass(flat, 5.0), flat, atol=1e-6)
    assert torch.allclose(low_pass(x, 5.0), reference_low_pass(x, 5.0), atol=1e-6)
    assert CSR().radius_for(x) == pytest.approx(5.0) and CSR().radius_for(torch.zeros(1, 3, 224, 224)) == 40.0
    smooth = low_pass(x, 5.0)  # a low-pass removes high-frequency energy
    hi = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean()  # noqa: E731
    assert hi(smooth) < hi(x)


@pytest.mark.parametrize("variant,updates", [("fast", 2), ("full", 3)])
def test_csr_equals_its_transcription(classifier, tiny_model, data, x_adv, held_out, variant, updates):
    csr = CSR(variant=variant, gate_thres="auto")
    csr.calibrate(tiny_model.encode_image, held_out)
    for inp in (data[0], x_adv):
        with PassCounter() as ours:
            logits, flagged = csr.defend(classifier, inp)
        with PassCounter() as ref:
            ref_logits, ref_flagged = reference_csr_logits(classifier, inp, updates=updates,
                                                           gate_thres=csr.gate_threshold)
        assert torch.equal(flagged, ref_flagged)
        assert torch.equal(logits.argmax(-1), ref_logits.argmax(-1))
        assert torch.allclose(logits, ref_logits, atol=1e-4)
        k = int(flagged.sum())
        assert ours.image_forwards == 2 * len(inp) + (updates + 1) * k  # the transcription: one more per flagged
        assert ref.image_forwards == 2 * len(inp) + (updates + 2) * k
        assert ours.image_backwards == ref.image_backwards == updates * k
    assert int(flagged.sum()) > 0  # the adversarial batch exercises the rectification


def test_mac_equals_its_transcription(classifier, tiny_model, data, x_adv, held_out):
    mac = MAC(gate_thres="auto")
    mac.calibrate(tiny_model.encode_image, held_out, generator=gen(1))
    assert mac.temperature == pytest.approx(0.01 * mac.gate_threshold / 0.7)
    for inp in (data[0], x_adv):
        with PassCounter() as ours:
            logits, w = mac.defend(classifier, inp, gen(3))
        with PassCounter() as ref:
            ref_logits, ref_w = reference_mac_logits(mac, classifier, inp, gen(3))
        assert torch.equal(w, ref_w)
        assert torch.equal(logits.argmax(-1), ref_logits.argmax(-1))
        assert torch.allclose(logits, ref_logits, atol=1e-4)
        assert ref.as_dict()["image_forwards"] == 14 * len(inp) and ref.image_backwards == 8 * len(inp)
        assert ours.image_forwards < ref.image_forwards and ours.image_backwards < ref.image_backwards
    # the same generator, the same output; another generator, another augmentation
    again, _ = mac.defend(classifier, data[0], gen(3))
    other, _ = mac.defend(classifier, data[0], gen(4))
    assert torch.equal(again, mac.defend(classifier, data[0], gen(3))[0]) and not torch.equal(again, other)


@pytest.mark.parametrize("make", [lambda: CSR(gate_thres=0.99), lambda: MAC(gate_thres=0.2)])
def test_differentiable_modes_reach_the_input_not_the_weights(classifier, data, make):
    d = make()
    x, y = data[0][:4], data[1][:4]
    for mode in d.differentiable_modes:
        xr = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(Defended(d, classifier, differentiable=mode)(xr, gen(0)), y)
        (g,) = torch.autograd.grad(loss, xr)
        assert g.abs().sum() > 0, mode
    assert all(p.grad is None for p in classifier.parameters())
    assert adaptive_attacks_for(d) == ["eot-pgd", "bpda-pgd", "gate-aware"]


@pytest.mark.parametrize("which", ["csr", "mac"])
def test_gate_aware_attack_opens_the_gate(classifier, data, which):
    """With a threshold where the gate binds on PGD examples, the hinge keeps the adversarial inputs on the
    unpurified side: more of them pass the gate than the oblivious PGD examples do."""
    x, y = data
    d = CSR(gate_thres=0.97) if which == "csr" else MAC(gate_thres=0.35)
    pgd = PGD(EPS, steps=5, step_size=2.5 * EPS / 5)(classifier, x, y, generator=gen(0))
    atk = GateAwarePGD(EPS, steps=5, step_size=2.5 * EPS / 5, lambdas=(100.0,), eot_samples=2,
                       include_oblivious=False)
    adv = atk(d, classifier, x, y, gen(0))
    with torch.no_grad():
        before = gate_passes(d, d.gate_score(classifier, pgd, gen(9))).float().mean()
        after = gate_passes(d, d.gate_score(classifier, adv, gen(9))).float().mean()
    assert after > before
