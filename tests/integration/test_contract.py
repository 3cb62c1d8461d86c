"""The contract every registered attack, adaptive attack and defense keeps: one test per property, each
parametrised over every registered name (torchattacks' test_atks.py style), so registering a method is all it
takes to be covered. Attacks are pointed at targets as the grid points them (one contract): the classifier, and a
``Defended`` representative defense (the first randomised, gated one: TTC); adaptive attacks at each defense whose
description calls for them. The last tests check that these checks catch deliberately broken methods.

Small settings (``SMALL``, offered to each method as far as its constructor takes them), 4 images, one thread.
The batch of 4 runs through a copy of the classifier whose weights require grad, each with a hook (the trip
wire: a method that calls ``loss.backward()`` instead of asking for the input's gradient is caught there); the
batches of 1 and 3 run through the shared frozen classifier. Gated defenses (those that describe a gate and can
``calibrate`` it) get their threshold at the median of the test images' clean scores, so a batch mixes purified
and passed images and both paths run.

Tolerances: a method's output for a sample may differ by float rounding between batch sizes (a reduction
vectorises differently; measured up to 6e-8 in a pixel (FAB) and 2e-6 in a logit); a different random draw
moves a pixel by up to 2 eps and a logit by far more than ``LOGIT_ATOL``.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from counterclip import rng
from counterclip.attacks import ADAPTIVE, ATTACKS, PGD
from counterclip.defenses import DEFENSES
from counterclip.defenses.base import Defended, NoDefense, has_gate, supported_modes
from counterclip.errors import CounterclipError
from counterclip.evaluation.describe import adaptive_attacks_for
from counterclip.registry import Registry
from counterclip.rng import per_sample_generators

# -- the registries: the only lines of this file that know how methods are kept and built ------------------------
REGISTRIES = {"attack": ATTACKS, "adaptive": ADAPTIVE, "defense": DEFENSES}
# small settings per kind, offered: a method takes those its signature has (defenses keep their own step counts)
SMALL = {"attack": {"steps": 2, "queries": 16, "n_target_classes": 2, "judge_draws": 2, "eot_iter": 2},
         "adaptive": {"steps": 2, "eot_samples": 2}, "defense": {"views": 4}}


def registered(kind: str) -> list[str]:
    """Every registered word of ``kind`` ("attack", "adaptive", "defense")."""
    return REGISTRIES[kind].names()


def build(kind: str, name: str, *args, offered: dict | None = None, **kw):
    """``name`` of ``kind`` with the ``SMALL`` settings and ``offered`` ones it takes, ``kw`` on top."""
    return REGISTRIES[kind].build(name, *args, offered={**SMALL[kind], **(offered or {})}, **kw)
# ---------------------------------------------------------------------------------------------------------------

EPS = 8 / 255
EPS_L2 = 0.5
N, SPLIT = 4, 1  # the batch of 4, and the same images as batches [0, 1) and [1, 4)
BALL_TOL = 1e-6
PIXEL_ATOL = 1e-5
LOGIT_ATOL = 1e-4

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: second-order graphs


def gens(lo: int, hi: int, stream: str = "contract"):
    return per_sample_generators(0, "contract", range(lo, hi), stream)


def defense_for(name: str, classifier, x):
    """A defense with small settings; a gate it describes and can calibrate is set at the median of the clean
    scores of ``x``."""
    d = build("defense", name)
    if has_gate(d) and callable(getattr(d, "calibrate", None)):
        d.calibrate(classifier.encode_image, x, q=0.5, generator=gens(0, len(x), "calibrate"))
    return d


def open_gate(name: str) -> dict:
    """Settings that purify every input, for a gated defense (a threshold on the far side of every score)."""
    wide = math.inf if getattr(build("defense", name), "gate_purifies", "below") == "below" else -math.inf
    return {"tau_thres": wide, "gate_thres": wide}


def adaptive_pairs() -> list[tuple[str, str]]:
    """(adaptive attack, defense) for every registered defense and every registered adaptive attack the
    defense's own description calls for (``describe.adaptive_attacks_for``)."""
    out = []
    for d in registered("defense"):
        applies = adaptive_attacks_for(build("defense", d))
        out += [(a, d) for a in registered("adaptive") if a in applies]
    return out


def mode_pairs() -> list[tuple[str, str]]:
    return [(d, m) for d in registered("defense") for m in supported_modes(build("defense", d))]


@pytest.fixture(scope="module")
def data(batch):
    return batch[0][:N].clone(), batch[1][:N].clone()


# -- weights: what a call did to them ----------------------------------------------------------------------------
class Weights:
    """Runs calls against the frozen classifier or a trip-wired copy of it (every weight requires grad and has a
    hook) and lists the weights a call touched: a gradient computed for it, a ``.grad`` left on it, its
    ``requires_grad`` changed. Resets them after each call, so one broken method cannot fail another's test."""

    def __init__(self, frozen):
        self.frozen, self.wired, self.fired = frozen, copy.deepcopy(frozen), set()
        for n, p in self.wired.named_parameters():
            p.requires_grad_(True)
            p.register_hook(lambda g, n=n: self.fired.add(n))

    def call(self, wired: bool, fn):
        clf = self.wired if wired else self.frozen
        self.fired.clear()
        try:
            out = fn(clf)
        finally:
            touched = {f"{n}: gradient computed" for n in self.fired}
            for n, p in clf.named_parameters():
                if p.grad is not None:
                    touched.add(f"{n}: .grad set")
                if p.requires_grad != wired:
                    touched.add(f"{n}: requires_grad changed to {p.requires_grad}")
                p.grad = None
                p.requires_grad_(wired)
            self.fired.clear()
        return out, sorted(touched)


@pytest.fixture(scope="module")
def weights(classifier):
    return Weights(classifier)


@pytest.fixture(scope="module")
def memo():
    """Runs shared by the properties of one method (each test asks for the runs it needs; the first asks)."""
    return {}


def once(memo, key, fn):
    if key not in memo:
        memo[key] = fn()
    return memo[key]


# -- the property checks (also run on broken methods at the end) -------------------------------------------------
def check_in_ball_and_box(x_adv, x, eps, norm):
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert float(size.max()) <= eps + BALL_TOL, f"left the {norm} ball: {float(size.max())} > eps {eps}"
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1, "left the [0,1] box"


def check_clean(x_adv, x):
    assert torch.equal(x_adv, x), f"eps = 0 moved the input by {float((x_adv - x).abs().max())}"


def check_close(a, b, atol, what="differs with the batch size"):
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    assert torch.allclose(a, b, rtol=0, atol=atol), f"{what}: by up to {float((a - b).abs().max())}"


def check_untouched(touched):
    assert not touched, "weights touched: " + "; ".join(touched[:5])


def check_logits(logits, b, c):
    assert tuple(logits.shape) == (b, c), f"logits of shape {tuple(logits.shape)}, not ({b}, {c})"
    assert bool(torch.isfinite(logits).all()), "non-finite logits"


def check_reaches_input(grad, x):
    assert grad is not None and grad.shape == x.shape, "no gradient w.r.t. the input"
    assert bool(torch.isfinite(grad).all()), "non-finite input gradient"
    dead = (grad.flatten(1) == 0).all(1)
    assert not bool(dead.any()), f"zero input gradient for samples {dead.nonzero().flatten().tolist()}"


def check_jsonable(params):
    assert isinstance(params, dict), f"{type(params).__name__}, not a dict"
    json.dumps(params)  # no default=: a tensor or an object in the record is an error here, not a str later


# -- runs --------------------------------------------------------------------------------------------------------
def target(clf, defense, x):
    """What an attack is pointed at (one contract): the classifier, or ``defense`` on it as a ``Defended``."""
    return clf if defense is None else Defended(defense_for(defense, clf, x), clf)


def attack_runs(memo, weights, data, kind, name, defense=None):
    """``(x_adv of the batch of 4 on the trip-wired classifier, touched), (the same images as batches of 1 and 3
    on the frozen one, touched)``."""
    x, y = data

    def run(lo, hi, wired):
        atk = build(kind, name, EPS)
        return weights.call(wired, lambda clf: atk(target(clf, defense, x), x[lo:hi], y[lo:hi],
                                                   generator=gens(lo, hi)))

    whole = once(memo, (kind, name, defense, "whole"), lambda: run(0, N, True))
    parts = once(memo, (kind, name, defense, "parts"), lambda: [run(0, SPLIT, False), run(SPLIT, N, False)])
    return whole, (torch.cat([parts[0][0], parts[1][0]]), parts[0][1] + parts[1][1])


def defense_runs(memo, weights, data, name):
    x, _ = data

    def run(lo, hi, wired):
        return weights.call(wired, lambda clf: defense_for(name, weights.frozen, x)(clf, x[lo:hi], gens(lo, hi)))

    whole = once(memo, ("defense", name, "whole"), lambda: run(0, N, True))
    parts = once(memo, ("defense", name, "parts"), lambda: [run(0, SPLIT, False), run(SPLIT, N, False)])
    return whole, (torch.cat([parts[0][0], parts[1][0]]), parts[0][1] + parts[1][1])


def mode_run(memo, weights, data, name, mode):
    """``((input gradient of the summed loss of mode's logits, the logits), touched)``, on the trip-wired
    classifier, with the draws of the fast path's batch of 4."""
    x, y = data

    def call(clf):
        xr = x.clone().requires_grad_(True)
        logits = Defended(defense_for(name, weights.frozen, x), clf, differentiable=mode)(xr, gens(0, N))
        loss = F.cross_entropy(logits, y, reduction="sum")
        grad = torch.autograd.grad(loss, xr, allow_unused=True)[0] if loss.requires_grad else None
        return grad, logits.detach()

    return once(memo, ("mode", name, mode), lambda: weights.call(True, call))


def eps_zero_output(weights, data, kind, name, defense=None):
    x, y = data
    return build(kind, name, 0.0)(target(weights.frozen, defense, x), x, y, generator=gens(0, N))


def eps_zero_logits(weights, data, name):
    """(the defense's logits with eps = 0 and its gate wide open, the undefended classifier's)."""
    x, _ = data
    d = build("defense", name, eps=0.0, offered=open_gate(name))
    with torch.no_grad():
        return d(weights.frozen, x, gens(0, N)), weights.frozen(x)


# -- attacks -----------------------------------------------------------------------------------------------------
def representative_defense() -> str:
    """The first registered defense that is randomised and gated (TTC): every attack also runs through it."""
    return next(d for d in registered("defense")
                if getattr(build("defense", d), "randomized", False) and has_gate(build("defense", d)))


ATTACK_CASES = ([("attack", a, None) for a in registered("attack")]
                + [("attack", a, representative_defense()) for a in registered("attack")]
                + [("adaptive", a, d) for a, d in adaptive_pairs()])
ATTACK_IDS = [a if d is None else f"{a}@{d}" for _, a, d in ATTACK_CASES]


def takes_l2(name: str) -> bool:
    """The attack builds with ``norm="l2"`` (FAB and Square decline it when built)."""
    try:
        build("attack", name, EPS_L2, norm="l2")
    except (ValueError, TypeError, CounterclipError):
        return False
    return True


BALL_CASES = [(*c, "linf") for c in ATTACK_CASES] + [("attack", a, None, "l2") for a in registered("attack")
                                                      if takes_l2(a)]


@pytest.mark.parametrize("kind,name,defense,norm", BALL_CASES,
                         ids=ATTACK_IDS + [f"{a}-l2" for _, a, _, n in BALL_CASES if n == "l2"])
def test_attack_stays_in_the_ball_and_the_box(memo, weights, data, kind, name, defense, norm):
    if norm == "linf":
        (x_adv, _), _ = attack_runs(memo, weights, data, kind, name, defense)
        atk = build(kind, name, EPS)
    else:
        atk = build(kind, name, EPS_L2, norm=norm)
        x_adv, _ = weights.call(False, lambda clf: atk(clf, *data, generator=gens(0, N)))
    assert atk.norm == norm
    check_in_ball_and_box(x_adv, data[0], atk.eps, norm)


@pytest.mark.parametrize("kind,name,defense", ATTACK_CASES, ids=ATTACK_IDS)
def test_attack_at_eps_zero_returns_the_clean_input(weights, data, kind, name, defense):
    check_clean(eps_zero_output(weights, data, kind, name, defense), data[0])


@pytest.mark.parametrize("kind,name,defense", ATTACK_CASES, ids=ATTACK_IDS)
def test_attack_same_seed_same_output_whatever_the_batch_size(memo, weights, data, kind, name, defense):
    (whole, _), (parts, _) = attack_runs(memo, weights, data, kind, name, defense)
    check_close(whole, parts, PIXEL_ATOL)


@pytest.mark.parametrize("kind,name,defense", ATTACK_CASES, ids=ATTACK_IDS)
def test_attack_leaves_the_weights_alone(memo, weights, data, kind, name, defense):
    (_, wired), (_, frozen) = attack_runs(memo, weights, data, kind, name, defense)
    check_untouched(wired + frozen)


@pytest.mark.parametrize("kind,name,defense", ATTACK_CASES, ids=ATTACK_IDS)
def test_attack_config_is_json(kind, name, defense):
    check_jsonable(build(kind, name, EPS).config())


# -- defenses ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", registered("defense"))
def test_defense_logits_have_one_finite_row_per_image(memo, weights, data, name):
    (logits, _), _ = defense_runs(memo, weights, data, name)
    check_logits(logits, N, weights.frozen.num_classes)


@pytest.mark.parametrize("name", registered("defense"))
def test_defense_same_seed_same_logits_whatever_the_batch_size(memo, weights, data, name):
    (whole, _), (parts, _) = defense_runs(memo, weights, data, name)
    check_close(whole, parts, LOGIT_ATOL)


@pytest.mark.parametrize("name", registered("defense"))
def test_defense_leaves_the_weights_alone(memo, weights, data, name):
    (_, wired), (_, frozen) = defense_runs(memo, weights, data, name)
    touched = wired + frozen
    for mode in supported_modes(build("defense", name)):
        touched += mode_run(memo, weights, data, name, mode)[1]
    check_untouched(touched)


@pytest.mark.parametrize("name,mode", mode_pairs(), ids=[f"{d}-{m}" for d, m in mode_pairs()])
def test_defense_differentiable_mode_reaches_the_input(memo, weights, data, name, mode):
    (grad, _), _ = mode_run(memo, weights, data, name, mode)
    check_reaches_input(grad, data[0])


@pytest.mark.parametrize("name,mode", mode_pairs(), ids=[f"{d}-{m}" for d, m in mode_pairs()])
def test_defense_differentiable_mode_computes_the_fast_path_prediction(memo, weights, data, name, mode):
    """What an attack differentiates is what the evaluation classifies (same draws, float tolerance)."""
    (_, logits), _ = mode_run(memo, weights, data, name, mode)
    (fast, _), _ = defense_runs(memo, weights, data, name)
    check_close(logits, fast, LOGIT_ATOL, f"mode {mode!r} differs from the fast path")


@pytest.mark.parametrize("name", registered("defense"))
def test_defense_params_are_json(weights, data, name):
    check_jsonable(build("defense", name).params())
    check_jsonable(defense_for(name, weights.frozen, data[0]).params())  # calibrated: records carry the calibration


BUDGET_BOUND = [d for d in registered("defense") if getattr(type(build("defense", d)), "budget_bound", False)]


@pytest.mark.parametrize("name", BUDGET_BOUND)
def test_budget_bound_defense_at_eps_zero_is_the_undefended_classifier(weights, data, name):
    """With every input purified (gate wide open), a purification bounded by eps = 0 moves no pixel."""
    check_close(*eps_zero_logits(weights, data, name), LOGIT_ATOL, "eps = 0 changed the logits")


# -- the checks catch broken methods -----------------------------------------------------------------------------
class LeavesTheBall(PGD):
    """Broken: projects into [0,1] only, so it leaves the eps-ball (and moves the input at eps = 0)."""

    def project(self, x_adv, x):
        return x_adv.clamp(0, 1)


class OneStreamPerBatch(PGD):
    """Broken: draws the whole batch's start from the first sample's generator, so a sample's start depends on
    its place in the batch."""

    def random_init(self, x, generator):
        g = torch.Generator().manual_seed(generator[0].initial_seed())
        return super().random_init(x, g)


class BackwardToEverything(PGD):
    """Broken: ``loss.backward()`` instead of the input's gradient only (weights that require grad get one)."""

    def perturb(self, classifier, x, y, generator):
        x_adv = self.random_init(x, generator).requires_grad_(True)
        F.cross_entropy(classifier(x_adv), y).backward()
        return x_adv.detach() + self.step_size * x_adv.grad.sign()


class DetachedMode(NoDefense):
    """Broken: its "full" mode's logits are cut from the input, its "bpda" mode differentiates another function
    than the one it classifies with."""

    name = "detached"
    differentiable_modes = ("full", "bpda")

    def differentiable(self, classifier, x, generator=None, mode="full"):
        return classifier(x.detach()) if mode == "full" else 0.5 * classifier(x)


class NoisyAtZero(NoDefense):
    """Broken: claims a budget, but its noise ignores eps; its params hold a tensor."""

    name = "noisy"
    budget_bound = True

    def __init__(self, eps=4 / 255):
        self.eps = eps

    def predict(self, classifier, x, generator=None):
        return classifier((x + 0.05 * rng.randn(x.shape, generator)).clamp(0, 1))

    def params(self):
        return {"eps": torch.tensor(self.eps)}


class ExtraLogit(NoDefense):
    """Broken: one logit too many, and a NaN."""

    name = "extra"

    def predict(self, classifier, x, generator=None):
        z = classifier(x)
        return torch.cat([z, torch.full_like(z[:, :1], math.nan)], 1)


@pytest.fixture
def broken(monkeypatch):
    """A throwaway registry per kind in place of the real ones, holding the broken methods above."""
    attacks, defenses = Registry("attack"), Registry("defense")
    attacks.add("leaves-the-ball", LeavesTheBall)
    attacks.add("one-stream", OneStreamPerBatch)
    attacks.add("backward", BackwardToEverything)
    for cls in (DetachedMode, NoisyAtZero, ExtraLogit):
        defenses.add(cls.name, cls)
    monkeypatch.setitem(REGISTRIES, "attack", attacks)
    monkeypatch.setitem(REGISTRIES, "defense", defenses)


@pytest.mark.usefixtures("broken")
def test_the_attack_checks_catch_broken_attacks(weights, data):
    x, y = data
    memo = {}
    for name, check in [("leaves-the-ball", lambda w, p: check_in_ball_and_box(w[0], x, EPS, "linf")),
                        ("one-stream", lambda w, p: check_close(w[0], p[0], PIXEL_ATOL)),
                        ("backward", lambda w, p: check_untouched(w[1] + p[1]))]:
        whole, parts = attack_runs(memo, weights, data, "attack", name)
        with pytest.raises(AssertionError):
            check(whole, parts)
    with pytest.raises(AssertionError):
        check_clean(eps_zero_output(weights, data, "attack", "leaves-the-ball"), x)


@pytest.mark.usefixtures("broken")
def test_the_defense_checks_catch_broken_defenses(weights, data):
    memo = {}
    with pytest.raises(AssertionError):
        check_reaches_input(mode_run(memo, weights, data, "detached", "full")[0][0], data[0])
    (_, logits), _ = mode_run(memo, weights, data, "detached", "bpda")
    with pytest.raises(AssertionError):
        check_close(logits, defense_runs(memo, weights, data, "detached")[0][0], LOGIT_ATOL)
    (logits, _), _ = defense_runs(memo, weights, data, "extra")
    with pytest.raises(AssertionError):
        check_logits(logits, N, weights.frozen.num_classes)
    with pytest.raises(TypeError):
        check_jsonable(build("defense", "noisy").params())
    with pytest.raises(AssertionError):
        check_close(*eps_zero_logits(weights, data, "noisy"), LOGIT_ATOL)
