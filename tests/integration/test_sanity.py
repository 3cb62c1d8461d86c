"""Each sanity check passes on a sound evaluation and fires on a deliberately broken one."""

import torch
import torch.nn.functional as F

from counterclip.attacks import PGD
from counterclip.defenses import TTE, Defended, RandomNoise, TTC
from counterclip.evaluation import sanity


class LeakyPGD(PGD):
    """Broken on purpose: skips the final projection, so an eps=0 attack still moves the image."""

    def project(self, x_adv, x):
        return (x_adv + 0.05 * torch.sign(torch.randn_like(x_adv))).clamp(0, 1)


def _pred(clf, x):
    with torch.no_grad():
        return clf(x).argmax(-1)


def test_eps_zero(classifier, batch):
    x, y = batch[0][:32], batch[1][:32]
    clean = _pred(classifier, x)
    good = PGD(0.0, steps=3)(classifier, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(good, x)
    assert sanity.eps_zero(clean, _pred(classifier, good), y)["passed"] is True
    bad = LeakyPGD(0.0, steps=3)(classifier, x, y, generator=torch.Generator().manual_seed(0))
    assert sanity.eps_zero(clean, _pred(classifier, bad), y)["passed"] is False


def _robust(classifier, x, y, attack):
    x_adv = attack(classifier, x, y, generator=torch.Generator().manual_seed(0))
    return float((_pred(classifier, x_adv) == y).float().mean())


def test_monotone_in_eps_and_steps(classifier, batch):
    x, y = batch
    a1, a8 = (_robust(classifier, x, y, PGD(e / 255, steps=5, step_size="auto")) for e in (1, 8))
    assert sanity.monotone("eps", a1, a8, len(y), "1/255", "8/255")["passed"] is True
    # broken: report the budgets the wrong way round, as a mislabelled grid would
    assert sanity.monotone("eps", a8, a1, len(y), "1/255", "8/255")["passed"] is False
    s2, s10 = (_robust(classifier, x, y, PGD(8 / 255, steps=s, step_size="auto")) for s in (2, 10))
    assert sanity.monotone("steps", s2, s10, len(y), "2 steps", "10 steps")["passed"] is True


def test_collapse_fires_on_a_weak_attack(classifier, batch):
    x, y = batch
    strong = _robust(classifier, x, y, PGD(16 / 255, steps=10, step_size="auto"))
    weak = _robust(classifier, x, y, PGD(16 / 255, steps=1, step_size=0.1 / 255))  # broken: a step that cannot move
    assert sanity.collapse(strong, "16/255")["passed"] is True
    assert sanity.collapse(weak, "16/255")["passed"] is False


def _input_grad(model, x, y, **kw):
    x = x.clone().requires_grad_(True)
    logits = model(x, **kw)
    if not logits.requires_grad:  # the fast path detaches: the gradient is zero, as an attack would see it
        return torch.zeros_like(x)
    return torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)[0]


def test_gradient_check_fires_on_masked_gradients(classifier, batch):
    x, y = batch[0][:16], batch[1][:16]
    ttc = TTC(tau_thres=float("inf"))
    assert sanity.gradients(_input_grad(classifier, x, y), "clf")["passed"] is True
    assert sanity.gradients(_input_grad(Defended(ttc, classifier, differentiable="full"), x, y), "ttc")["passed"]
    masked = torch.zeros_like(x)  # what an attack sees through a detached path
    assert sanity.gradients(masked, "ttc fast path")["passed"] is False
    nan = _input_grad(classifier, x, y)
    nan[::2] = float("nan")
    assert sanity.gradients(nan, "nan")["passed"] is False


def test_adaptive_weaker_than_oblivious_is_flagged():
    assert sanity.adaptive_vs_oblivious(0.30, 0.40)["passed"] is True
    assert sanity.adaptive_vs_oblivious(0.45, 0.40)["passed"] is False
    assert sanity.adaptive_vs_oblivious(0.45, None)["passed"] is None


def test_randomised_and_dynamic_defenses_are_named(classifier, batch):
    x = batch[0][:8]

    def differs(defense):
        with torch.no_grad():
            a = defense(classifier, x, generator=torch.Generator().manual_seed(1))
            b = defense(classifier, x, generator=torch.Generator().manual_seed(2))
        return not torch.allclose(a, b)

    rn, tte, ttc = RandomNoise(), TTE(), TTC(tau_thres=float("inf"))
    assert "randomised" in sanity.randomness(rn, differs(rn))["detail"]
    assert sanity.randomness(tte, differs(tte))["detail"] == "deterministic and static"
    d = sanity.randomness(ttc, differs(ttc))["detail"]
    assert "randomised" in d and "dynamic" in d
