"""Adaptive attacks (EOT-PGD full / BPDA, tau-aware) against TTC and the baselines, on the tiny model.

Budgets were picked by measurement: the tiny Fashion-MNIST model is far less fragile than ViT-B/32, so the
attacks use eps = 8/255 with the 2.5*eps/steps step (5 steps). Every robust accuracy is TTC's (or the
baseline's) fast path with one fixed evaluation seed, independent of the attacks' own seeds.
"""

from __future__ import annotations

import pytest
import torch

from counterclip import rng
from counterclip.attacks import PGD
from counterclip.attacks.adaptive import EOTPGD, TauAwarePGD, build_adaptive, copy_generators
from counterclip.defenses import TTC, AntiAdversary, Defended, HedgeDefence, NoDefense, RandomNoise, TTE
from counterclip.errors import UnknownNameError

N = 32
EPS = 8 / 255
STEPS = 5
STEP = 2.5 * EPS / STEPS
EOT = 2
EVAL_SEED = 123


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def correct(defense, classifier, x, y) -> int:
    """Images the defense (fast path, fixed evaluation seed) classifies correctly."""
    with torch.no_grad():
        return int((defense(classifier, x, gen(EVAL_SEED)).argmax(-1) == y).sum())


def in_ball_and_box(x_adv, x, eps=EPS):
    return (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def data(batch):
    return batch[0][:N].clone(), batch[1][:N].clone()


@pytest.fixture(scope="module")
def x_oblivious(classifier, data):
    """The paper's threat model: PGD on the undefended classifier, then the defense."""
    x, y = data
    return PGD(EPS, steps=STEPS, step_size=STEP)(classifier, x, y, generator=gen(0))


@pytest.fixture(scope="module")
def ttc_auto(tiny_model):
    from counterclip.data import get_dataset

    train = get_dataset("fashion-mnist", split="train").dataset
    ttc = TTC(tau_thres="auto")
    ttc.calibrate(tiny_model.encode_image, train.x[:256], generator=gen(0))
    return ttc


def _ttc(which, ttc_auto):
    return TTC(tau_thres=float("inf")) if which == "inf" else ttc_auto


@pytest.mark.parametrize("which,name", [("inf", "eot-pgd"), ("inf", "bpda-pgd"), ("auto", "eot-pgd"),
                                        ("auto", "bpda-pgd"), ("auto", "tau-aware")])
def test_adaptive_attack_is_no_weaker_than_oblivious(classifier, data, x_oblivious, ttc_auto, which, name):
    x, y = data
    ttc = _ttc(which, ttc_auto)
    attack = build_adaptive(name, eps=EPS, steps=STEPS, step_size=STEP, eot_samples=EOT)
    x_adv = attack(ttc, classifier, x, y, generator=gen(1))
    assert x_adv.dtype == torch.float32 and x_adv.shape == x.shape
    assert in_ball_and_box(x_adv, x)
    clean, oblivious, adaptive = (correct(ttc, classifier, v, y) for v in (x, x_oblivious, x_adv))
    assert adaptive < clean
    assert adaptive <= oblivious + 1, (which, name, clean, oblivious, adaptive)


def test_tau_aware_keeps_tau_up(classifier, data, x_oblivious):
    """On the tiny model PGD *raises* tau (the opposite of ViT-B/32's false stability), so the q=0.1 "auto"
    threshold never gates PGD images and there is no tau to keep up. With a threshold above PGD's typical tau
    the gate binds, and the tau-aware attack must end with higher tau (and more images left alone by the gate)
    than plain PGD."""
    x, y = data
    probe = TTC(tau_thres=float("inf"))
    tau_obl = probe.tau_of(classifier.encode_image, x_oblivious, generator=gen(EVAL_SEED))
    ttc = TTC(tau_thres=1.25 * float(tau_obl.median()))
    # the gate-evasion term alone (without the oblivious PGD candidate, which would win most images here)
    attack = TauAwarePGD(EPS, steps=STEPS, step_size=STEP, lambdas=(100.0,), eot_samples=EOT, include_oblivious=False)
    x_adv = attack(ttc, classifier, x, y, generator=gen(1))
    assert in_ball_and_box(x_adv, x)
    tau_adv = ttc.tau_of(classifier.encode_image, x_adv, generator=gen(EVAL_SEED))
    assert tau_adv.mean() > tau_obl.mean()
    assert (tau_adv >= ttc.tau_thres).sum() > (tau_obl >= ttc.tau_thres).sum()


@pytest.mark.parametrize("name,mode", [("rn", "full"), ("tte", "full"), ("anti-adversary", "full"),
                                       ("anti-adversary", "bpda"), ("hedge", "full"), ("hedge", "bpda")])
def test_eot_pgd_breaks_the_baselines(classifier, data, name, mode):
    x, y = data[0][:16], data[1][:16]
    defense = {"rn": RandomNoise, "tte": TTE, "anti-adversary": AntiAdversary, "hedge": HedgeDefence}[name]()
    attack = EOTPGD(EPS, steps=3, step_size=2.5 * EPS / 3, eot_samples=EOT, mode=mode)
    x_adv = attack(defense, classifier, x, y, generator=gen(1))
    assert in_ball_and_box(x_adv, x)
    assert correct(defense, classifier, x_adv, y) < correct(defense, classifier, x, y)


def test_no_gradient_reaches_parameters(classifier, data, ttc_auto):
    x, y = data[0][:4], data[1][:4]
    EOTPGD(EPS, steps=1, eot_samples=2, mode="full")(TTC(tau_thres=float("inf")), classifier, x, y, gen(0))
    EOTPGD(EPS, steps=1, eot_samples=2, mode="full")(HedgeDefence(), classifier, x, y, gen(0))
    TauAwarePGD(EPS, steps=1, lambdas=(10.0,), eot_samples=2)(ttc_auto, classifier, x, y, gen(0))
    assert all(p.grad is None and not p.requires_grad for p in classifier.parameters())


def test_same_seed_same_x_adv_and_batch_independence(classifier, data):
    x, y = data[0][:8], data[1][:8]
    ttc = TTC(tau_thres=float("inf"))
    attack = EOTPGD(EPS, steps=2, step_size=STEP, eot_samples=2, mode="full")
    gens = lambda seed, idx: rng.per_sample_generators(seed, "fashion-mnist", idx)  # noqa: E731
    a = attack(ttc, classifier, x, y, gens(0, range(8)))
    b = attack(ttc, classifier, x, y, gens(0, range(8)))
    c = attack(ttc, classifier, x, y, gens(1, range(8)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # per-sample generators: a sample's x_adv does not depend on the rest of the batch (up to float noise
    # from sub-batch matmul blocking, which may flip the sign of a vanishing gradient entry)
    part = attack(ttc, classifier, x[2:6], y[2:6], gens(0, range(2, 6)))
    assert (part - a[2:6]).abs().le(1e-5).float().mean() > 0.999
    tau = TauAwarePGD(EPS, steps=2, lambdas=(0.0, 10.0), eot_samples=2)
    ttc.tau_thres = 0.05
    assert torch.equal(tau(ttc, classifier, x, y, gen(3)), tau(ttc, classifier, x, y, gen(3)))


def test_eot_is_one_batched_forward_with_distinct_draws(classifier, data):
    x, y = data[0][:4], data[1][:4]
    seen = []

    class Spy(RandomNoise):
        def differentiable(self, classifier, x, generator=None, mode="full", delta0=None):
            delta0 = self.random_start(x.detach(), generator)
            seen.append(delta0)
            return classifier(x + delta0)

    EOTPGD(EPS, steps=2, eot_samples=3)(Spy(), classifier, x, y, rng.per_sample_generators(0, "t", range(4)))
    assert len(seen) == 2 and all(d.shape[0] == 3 * 4 for d in seen)
    copies = seen[0].view(3, 4, -1)
    assert not torch.equal(copies[0], copies[1]) and not torch.equal(copies[1], copies[2])
    assert not torch.equal(seen[0], seen[1])  # fresh draws every step
    seen.clear()
    EOTPGD(EPS, steps=1, eot_samples=3)(TTE(), classifier, x, y)  # deterministic: one sample
    gens = copy_generators(rng.per_sample_generators(0, "t", range(4)), 3, "eot")
    again = copy_generators(rng.per_sample_generators(0, "t", [2]), 3, "eot")
    assert len(gens) == 12 and len({g.initial_seed() for g in gens}) == 12
    assert [g.initial_seed() for g in again] == [gens[2 + 4 * k].initial_seed() for k in range(3)]


def test_no_defense_reduces_to_pgd(classifier, data):
    x, y = data[0][:16], data[1][:16]
    pgd = PGD(EPS, steps=3, step_size=STEP)(classifier, x, y, generator=gen(5))
    last = EOTPGD(EPS, steps=3, step_size=STEP, eot_samples=4, keep="last")(NoDefense(), classifier, x, y, gen(5))
    assert torch.allclose(last, pgd, atol=1e-6)
    tau = TauAwarePGD(EPS, steps=3, step_size=STEP)(NoDefense(), classifier, x, y, gen(5))
    assert torch.allclose(tau, pgd, atol=1e-6)
    best = EOTPGD(EPS, steps=3, step_size=STEP)(NoDefense(), classifier, x, y, gen(5))
    assert correct(NoDefense(), classifier, best, y) <= correct(NoDefense(), classifier, pgd, y)
    # a Defended module stands in for (defense, classifier)
    wrapped = EOTPGD(EPS, steps=3, step_size=STEP, keep="last")(Defended(NoDefense(), classifier), None, x, y,
                                                                  gen(5))
    assert torch.allclose(wrapped, pgd, atol=1e-6)


def test_tau_aware_needs_a_ttc_with_a_finite_calibrated_gate(classifier, data):
    x, y = data[0][:2], data[1][:2]
    attack = TauAwarePGD(EPS, steps=1)
    with pytest.raises(TypeError, match="gate"):
        attack(TTE(), classifier, x, y)
    with pytest.raises(ValueError, match="finite"):
        attack(TTC(tau_thres=float("inf")), classifier, x, y)
    with pytest.raises(RuntimeError, match="calibrat"):
        attack(TTC(tau_thres="auto"), classifier, x, y)
    x_adv = attack(RandomNoise(), classifier, x, y, gen(0))  # no gate: lambda = 0 only
    assert in_ball_and_box(x_adv, x)


def test_factory_and_config():
    eot = build_adaptive("eot-pgd", eps="8/255", steps=4, step_size="auto", eot_samples=3)
    bpda = build_adaptive("BPDA-PGD", eps=4 / 255)
    tau = build_adaptive("tau-aware", eps=4 / 255, lambdas=[0, 5])
    assert isinstance(eot, EOTPGD) and eot.mode == "full" and bpda.mode == "bpda"
    cfg = eot.config()
    assert cfg["name"] == "eot-pgd" and cfg["eps_str"] == "8/255" and cfg["steps"] == 4
    assert cfg["eot_samples"] == 3 and cfg["mode"] == "full" and cfg["threat_model"] == "adaptive"
    assert cfg["step_size"] == pytest.approx(2.5 * (8 / 255) / 4)
    assert bpda.config()["name"] == "bpda-pgd"
    tcfg = tau.config()
    assert tcfg["name"] == "tau-aware" and tcfg["lambdas"] == [0.0, 5.0] and tcfg["margin_frac"] == 0.1
    assert tau.margin_for(0.2) == pytest.approx(0.02)
    with pytest.raises(UnknownNameError):
        build_adaptive("eot", eps=1 / 255)
    with pytest.raises(ValueError):
        EOTPGD(1 / 255, mode="exact")
    with pytest.raises(ValueError):
        TauAwarePGD(1 / 255, lambdas=())
