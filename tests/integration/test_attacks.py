"""PGD / CW: budgets, pixel box, strength on the embedded model, seeding, frozen weights."""

import pytest
import torch

from counterclip.attacks import CW, PGD, build_attack, cw_margin_loss
from counterclip.budgets import eps_str, parse_eps, parse_list
from counterclip.errors import UnknownNameError


def test_budget_parser():
    assert parse_eps("4/255") == pytest.approx(4 / 255) and parse_eps(0.5) == 0.5 and parse_eps("0.25") == 0.25
    assert eps_str(4 / 255) == "4/255" and eps_str("0.3") == "0.3"
    assert parse_list("1/255, 4/255", parse_eps) == pytest.approx([1 / 255, 4 / 255])
    for bad in ("abc", "-1/255", "1/0", "nan"):
        with pytest.raises(ValueError):
            parse_eps(bad)


@pytest.mark.parametrize("name,norm,eps", [("pgd", "linf", "8/255"), ("pgd", "l2", 0.5), ("cw", "linf", "4/255")])
def test_attack_stays_in_ball_and_box(classifier, batch, name, norm, eps):
    x, y = batch[0][:32], batch[1][:32]
    atk = build_attack(name, eps, steps=5, step_size="auto" if norm == "linf" else 0.2, norm=norm)
    x_adv = atk(classifier, x, y, generator=torch.Generator().manual_seed(0))
    d = x_adv - x
    size = d.abs().amax() if norm == "linf" else d.flatten(1).norm(dim=1).max()
    assert size <= parse_eps(eps) + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(p.grad is None for p in classifier.parameters())


def test_accuracy_falls_with_eps_and_collapses_at_the_embedded_preset_budget(classifier, batch):
    x, y = batch
    accs = []
    for e in (0, 1, 4, 8, 16):
        x_adv = PGD(e / 255, steps=10, step_size="auto")(classifier, x, y, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            accs.append(float((classifier(x_adv).argmax(-1) == y).float().mean()))
    assert all(a >= b for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] < 0.2, accs  # 16/255, the largest budget of the embedded preset


def test_same_seed_same_output_and_global_rng_start(classifier, batch):
    x, y = batch[0][:8], batch[1][:8]
    atk = PGD(4 / 255, steps=2)
    a = atk(classifier, x, y, generator=torch.Generator().manual_seed(1))
    b = atk(classifier, x, y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    torch.manual_seed(5)
    c = atk(classifier, x, y)
    torch.manual_seed(5)
    assert torch.equal(c, atk(classifier, x, y))


def test_cw_loss_is_the_negative_hinge_on_the_margin():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 5.0, 60.0]])
    y = torch.tensor([0, 0])
    assert torch.allclose(cw_margin_loss(logits, y, 50.0), torch.tensor([-52.0, 0.0]))
    assert CW(1 / 255).config()["kappa"] == 50.0 and CW(1 / 255).name == "cw"


def test_unknown_attack_lists_valid_names():
    with pytest.raises(UnknownNameError, match="apgd-ce"):
        build_attack("fgsm", 1 / 255)
