"""TTC against a direct transcription of the spec, its efficiency paths, and its contracts."""

import math

import pytest
import torch

from counterclip.defenses import TTC, Defended, RandomNoise, step_weights
from counterclip.defenses.ttc_reference import reference_counterattack, reference_ttc_logits


def test_step_weights_match_the_paper():
    w = step_weights(2, 2.0)
    assert torch.allclose(w, torch.tensor([0.0159, 0.1173, 0.8668]), atol=1e-4)
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-6)


def _thresholds(classifier, x, ttc, gen_seed=0):
    """Thresholds that gate none, some and all of the batch."""
    d0 = ttc.random_start(x, torch.Generator().manual_seed(gen_seed))
    tau = ttc.tau_of(classifier.encode_image, x, d0)
    return d0, tau, [0.0, float(tau.median()), float("inf")]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_counterattack_matches_spec_transcription(classifier, batch, norm):
    x = batch[0][:24]
    eps = 4 / 255 if norm == "linf" else 0.5
    ttc = TTC(eps=eps, steps=3, step_size=1 / 255 if norm == "linf" else 0.1, beta=2.0, norm=norm)
    d0, tau_ref_all, thresholds = _thresholds(classifier, x, ttc)
    for thr in thresholds:
        for rate in (None, 1.0):  # both the no-grad path and the recorded-graph path
            ttc.tau_thres = thr
            ttc._attack_rate = rate
            delta, tau = ttc.counterattack(classifier.encode_image, x, delta0=d0)
            ref, tau_ref = reference_counterattack(classifier.encode_image, x, d0, eps=ttc.eps, steps=3,
                                                   step_size=ttc.step_size, tau_thres=thr, beta=2.0, norm=norm)
            assert torch.allclose(tau, tau_ref, atol=1e-6)
            # sub-batches change matmul blocking: float noise ~1e-6 on an eps of 0.5 is expected
            assert torch.allclose(delta, ref, atol=1e-5), (thr, rate, ttc.last_path)
            if norm == "linf":
                assert delta.abs().max() <= ttc.eps + 1e-6
            else:
                assert delta.flatten(1).norm(dim=1).max() <= ttc.eps + 1e-5
            assert (x + delta).min() >= 0 and (x + delta).max() <= 1


def test_gate_keeps_delta0_for_stable_images(classifier, batch):
    x = batch[0][:16]
    ttc = TTC()
    d0, tau, _ = _thresholds(classifier, x, ttc)
    ttc.tau_thres = float(tau.median())
    delta, _ = ttc.counterattack(classifier.encode_image, x, delta0=d0)
    gated = tau >= ttc.tau_thres
    assert gated.any() and (~gated).any()
    assert torch.equal(delta[gated], d0[gated])
    assert not torch.allclose(delta[~gated], d0[~gated])


def test_defended_logits_match_reference(classifier, batch):
    x = batch[0][:16]
    ttc = TTC()
    d0, tau, _ = _thresholds(classifier, x, ttc)
    ttc.tau_thres = float(tau.median())
    out = ttc.defend(classifier, x, delta0=d0)
    ref_logits, _ = reference_ttc_logits(classifier, x, d0, eps=ttc.eps, steps=2, step_size=ttc.step_size,
                                         tau_thres=ttc.tau_thres, beta=2.0)
    assert torch.allclose(out.logits, ref_logits, atol=1e-4)
    assert torch.equal(out.counterattacked, tau < ttc.tau_thres)


def test_steps_zero_is_random_noise(classifier, batch):
    x = batch[0][:16]
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    ttc0 = TTC(steps=0, tau_thres=float("inf"))
    rn = RandomNoise()
    l_ttc = ttc0(classifier, x, generator=gen())
    l_rn = rn(classifier, x, generator=gen())
    d0 = rn.random_start(x, gen())
    assert torch.allclose(l_ttc, l_rn)
    assert torch.allclose(l_rn, classifier(x + d0), atol=1e-5)
    delta, _ = ttc0.counterattack(classifier.encode_image, x, delta0=d0)
    assert torch.equal(delta, d0)


def test_random_start_in_ball_and_box(batch):
    x = batch[0][:8]
    for norm, eps in (("linf", 4 / 255), ("l2", 0.5)):
        d0 = TTC(eps=eps, norm=norm).random_start(x, torch.Generator().manual_seed(0))
        size = d0.abs().amax() if norm == "linf" else d0.flatten(1).norm(dim=1).max()
        assert size <= eps + 1e-6
        assert (x + d0).min() >= 0 and (x + d0).max() <= 1


def test_same_seed_same_output(classifier, batch):
    x = batch[0][:8]
    ttc = TTC(tau_thres=float("inf"))
    a = ttc(classifier, x, generator=torch.Generator().manual_seed(7))
    b = ttc(classifier, x, generator=torch.Generator().manual_seed(7))
    c = ttc(classifier, x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_no_gradient_reaches_parameters(classifier, batch):
    x = batch[0][:8].clone().requires_grad_(True)
    for mode in ("full", "bpda"):
        logits = Defended(TTC(tau_thres=float("inf")), classifier, differentiable=mode)(x)
        logits.sum().backward()
    TTC(tau_thres=float("inf"))(classifier, x.detach())
    assert all(p.grad is None and not p.requires_grad for p in classifier.parameters())
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_inference_mode_refuses_a_gradient_in_one_line_but_differentiable_modes_give_one(classifier, batch):
    x = batch[0][:4].clone().requires_grad_(True)
    fast = Defended(TTC(tau_thres=float("inf")), classifier, differentiable=False)(x)
    with pytest.raises(RuntimeError, match="inference-only mode") as err:
        fast.sum().backward()
    assert "\n" not in str(err.value) and "'bpda'" in str(err.value) and "'full'" in str(err.value)
    for mode in (True, "bpda", "auto"):
        slow = Defended(TTC(tau_thres=float("inf")), classifier, differentiable=mode)(x)
        assert slow.requires_grad


def test_differentiable_full_matches_fast_prediction(classifier, batch):
    x = batch[0][:8]
    ttc = TTC(tau_thres=float("inf"))
    d0 = ttc.random_start(x, torch.Generator().manual_seed(1))
    fast = ttc.defend(classifier, x, delta0=d0).logits
    full = ttc.differentiable(classifier, x, delta0=d0, mode="full")
    assert torch.allclose(fast, full.detach(), atol=1e-4)


def test_auto_threshold_calibrates_on_held_out_images(classifier, tiny_model, batch):
    from counterclip.data import get_dataset

    train = get_dataset("fashion-mnist", split="train").dataset
    ttc = TTC(tau_thres="auto", tau_quantile=0.1)
    with pytest.raises(RuntimeError, match="calibrat"):
        ttc(classifier, batch[0][:2])
    thr = ttc.calibrate(tiny_model.encode_image, train.x[:128], generator=torch.Generator().manual_seed(0))
    taus = ttc.tau_of(tiny_model.encode_image, train.x[:128], generator=torch.Generator().manual_seed(0))
    assert thr == pytest.approx(float(torch.quantile(taus.double(), 0.1)), rel=1e-5)
    assert ttc.params()["calibration"]["n"] == 128 and ttc.params()["tau_thres"] == thr


def test_separate_tau_encoder(classifier, batch, tiny_model):
    """With a tau encoder, tau comes from it while the counterattack uses the classifier's encoder."""
    x = batch[0][:8]
    ttc = TTC(tau_thres=float("inf"), tau_encoder=lambda z: tiny_model.encode_image(z.flip(-1)))
    d0 = ttc.random_start(x, torch.Generator().manual_seed(0))
    _, tau = ttc.counterattack(classifier.encode_image, x, delta0=d0)
    a = tiny_model.encode_image(x.flip(-1))
    expect = (tiny_model.encode_image((x + d0).flip(-1)) - a).norm(dim=-1) / a.norm(dim=-1)
    assert torch.allclose(tau, expect, atol=1e-5)
    ref, _ = reference_counterattack(classifier.encode_image, x, d0, eps=ttc.eps, steps=2, step_size=ttc.step_size,
                                     tau_thres=float("inf"), beta=2.0, tau_encoder=ttc.tau_encoder)
    out = ttc.defend(classifier, x, delta0=d0)
    assert torch.allclose(out.delta, ref, atol=1e-6)
