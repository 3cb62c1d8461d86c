"""Dev-only yardsticks for our AutoAttack: the AutoAttack source itself (set COUNTERCLIP_AUTOATTACK_SRC to a
checkout of fra31/auto-attack, or install it) and torchattacks; the full-budget ones also need
COUNTERCLIP_DEV_FULL=1 (minutes on a CPU). Each is skipped when what it compares against is absent."""

from __future__ import annotations

import os

import pytest
import torch

from counterclip.attacks.apgd import APGDT
from counterclip.attacks.autoattack import AutoAttack
from counterclip.attacks.fab import FAB
from counterclip.attacks.square import Square

from helpers import EPS, gens, wrong  # noqa: E402


def _dev_full():
    if not os.environ.get("COUNTERCLIP_DEV_FULL"):
        pytest.skip("full-budget yardstick comparison: set COUNTERCLIP_DEV_FULL=1 (minutes on a CPU)")


def test_apgd_t_and_square_against_torchattacks(classifier, batch):
    _dev_full()
    torchattacks = pytest.importorskip("torchattacks")
    x, y = batch
    ours_t = wrong(classifier, APGDT(EPS, steps=20)(classifier, x, y, gens(range(64), "t")), y).sum()
    ta_t = torchattacks.APGDT(classifier, eps=EPS, steps=20, n_restarts=1, n_classes=10, seed=0)
    theirs_t = wrong(classifier, ta_t(x, y), y).sum()
    ours_s = wrong(classifier, Square(EPS, queries=300)(classifier, x, y, gens(range(64), "s")), y).sum()
    ta_s = torchattacks.Square(classifier, eps=EPS, n_queries=300, resc_schedule=False, seed=0)
    theirs_s = wrong(classifier, ta_s(x, y), y).sum()
    print(f"fooled of 64: APGD-T-20 ours {ours_t} torchattacks {theirs_t}; Square-300 ours {ours_s} "
          f"torchattacks {theirs_s}")
    assert ours_t >= theirs_t - 1 and ours_s >= theirs_s - 1


def test_autoattack_standard_full_budget_against_the_autoattack_source(classifier, batch, autoattack_source):
    """Done-when (dev-only): AutoAttack standard at 4/255, full budget, on 64 embedded-model images: never
    weaker than any component per sample, and within 1 sample in 64 of AutoAttack's own result."""
    _dev_full()
    ref_pkg = autoattack_source
    x, y = batch
    ours = AutoAttack(EPS, version="standard")
    names = ours.component_names(classifier.num_classes)
    g = lambda: {n: gens(range(64), f"attack:{n}") for n in names + ["clean"]}  # noqa: E731
    w_ours = wrong(classifier, ours(classifier, x, y, g()), y)
    alone = {}
    for n in names:
        w = wrong(classifier, ours.build(n)(classifier, x, y, g()[n]), y)
        alone[n] = int(w.sum())
        assert not (w & ~w_ours).any(), n
    ref = ref_pkg.AutoAttack(classifier, norm="Linf", eps=EPS, version="standard", seed=0, device="cpu",
                             verbose=False)
    w_ref = wrong(classifier, ref.run_standard_evaluation(x, y, bs=64), y)
    print(f"AutoAttack standard 4/255 on 64 images, robust: ours {64 - int(w_ours.sum())} (stages "
          f"{ours.last_stages}), AutoAttack source {64 - int(w_ref.sum())}; components alone, fooled: {alone}")
    assert abs(int(w_ours.sum()) - int(w_ref.sum())) <= 1


def test_fab_t_agrees_per_sample_with_the_autoattack_source(classifier, batch, autoattack_source):
    """Dev-only: FAB-T (one restart: deterministic) against the AutoAttack source's FABAttack_PT, same images and
    budget: the same samples fooled, the same points to float precision."""
    from autoattack.fab_pt import FABAttack_PT

    x, y = batch
    ours = FAB(EPS, steps=20, targeted=True, n_target_classes=3)(classifier, x, y)
    ref = FABAttack_PT(classifier, norm="Linf", n_restarts=1, n_iter=20, eps=EPS, seed=0, targeted=True,
                       n_target_classes=3, device="cpu").perturb(x, y)
    a, b = wrong(classifier, ours, y), wrong(classifier, ref, y)
    print(f"FAB-T-20 (3 targets) 4/255 on 64 images, fooled: ours {int(a.sum())}, AutoAttack source {int(b.sum())}")
    assert torch.equal(a, b)
    assert (ours - ref)[a & b].abs().max() < 1e-5
