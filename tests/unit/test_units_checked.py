"""Budgets in one unit and float pixels in [0,1]: the wrong unit fails in one line naming the fix."""

import pytest
import torch

from counterclip.attacks import PGD, build_attack
from counterclip.budgets import eps_str, parse_eps
from counterclip.defenses import CSR, MAC, TTC, AntiAdversary, HedgeDefence, RandomNoise
from counterclip.errors import CounterclipError
from counterclip.inputs import check_pixels
from counterclip.zeroshot import check_template


@pytest.mark.parametrize("value", [4, 4.0, "4", "1020/255"])
def test_eps_above_one_suggests_the_fraction(value):
    with pytest.raises(CounterclipError) as e:
        parse_eps(value)
    msg = str(e.value)
    assert "above 1" in msg and "did you mean 4/255?" in msg and "\n" not in msg


def test_budgets_in_range_and_l2_budgets_pass():
    assert parse_eps("4/255") == pytest.approx(4 / 255)
    assert parse_eps(1) == 1.0
    assert parse_eps(4, norm="l2") == 4.0  # an L2 radius above 1 is meaningful
    assert eps_str(4.0) == "1020/255"  # showing a stored value never raises
    with pytest.raises(ValueError):  # InputError is a ValueError too: older callers keep catching it
        parse_eps(-1)


@pytest.mark.parametrize("build", [
    lambda: TTC(eps=4), lambda: TTC(step_size=2), lambda: RandomNoise(eps=4), lambda: PGD(4),
    lambda: PGD(4 / 255, step_size=2), lambda: CSR(eps=4), lambda: MAC(eps=8), lambda: MAC(step_size=2),
    lambda: HedgeDefence(eps=4), lambda: AntiAdversary(step_size=2), lambda: build_attack("apgd-ce", 4),
    lambda: build_attack("square", 4), lambda: build_attack("autoattack", 4)])
def test_every_constructor_checks_its_budget(build):
    with pytest.raises(CounterclipError, match=r"above 1: budgets are in \[0,1\] pixel units; did you mean"):
        build()


def test_l2_attack_and_ttc_accept_a_radius_above_one():
    assert PGD(2.0, norm="l2", step_size=0.5).eps == 2.0
    assert TTC(eps=2.0, norm="l2").eps == 2.0


@pytest.mark.parametrize("x, words", [
    (torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8), "x.float() / 255"),
    (torch.rand(2, 1, 4, 4) * 255, "divide by 255"),
    ((torch.rand(2, 3, 4, 4) - 0.48) / 0.27, "normalised"),
    (torch.rand(2, 3, 4, 4) * 0.5 / 0.27 + 0.1, "normalised"),  # a bright normalised image: nothing negative
    (torch.full((1, 1, 2, 2), float("nan")), "NaN"),
])
def test_wrong_pixels_name_the_fix(x, words):
    with pytest.raises(CounterclipError) as e:
        check_pixels(x, "here")
    assert words in str(e.value) and str(e.value).startswith("here: ")


def test_pixels_in_range_pass_unchanged():
    x = torch.rand(3, 3, 8, 8)
    assert check_pixels(x, "here") is x
    assert check_pixels(torch.empty(0, 3, 8, 8), "here").numel() == 0
    check_pixels(torch.tensor([0.0, 1.0 + 1e-6]), "here")  # float rounding at the edge is not an error


@pytest.mark.parametrize("bad", ["a photo of a dog.", "a {} and a {}.", "a {0} photo {x}"])
def test_template_needs_one_placeholder(bad):
    with pytest.raises(CounterclipError, match="must contain {} once"):
        check_template(bad)
    assert check_template("a photo of a {}.") == "a photo of a {}."


def test_mirror_templates_go_through_the_same_check():
    from counterclip.data.sources import _templates

    assert _templates(["a photo of a {c}."], "mirror") == ["a photo of a {}."]
    with pytest.raises(CounterclipError, match="^mirror: template 'a photo.' must contain {} once"):
        _templates(["a photo."], "mirror")
