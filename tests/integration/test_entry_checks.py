"""The public entry points check budgets and pixels once, in one line; the calls nested inside them do not."""

import pytest
import torch

import counterclip
from counterclip import inputs
from counterclip.attacks import PGD
from counterclip.cli import main
from counterclip.defenses import TTC, Defended
from counterclip.errors import CounterclipError


@pytest.mark.parametrize("call", ["classifier", "defense", "defended", "attack"])
@pytest.mark.parametrize("scale, words", [(255, "0-255"), (None, "uint8"), (-1, "normalised")])
def test_entry_points_refuse_wrong_pixels(classifier, batch, call, scale, words):
    x, y = batch
    x = x[:4]
    bad = (x * 255).to(torch.uint8) if scale is None else (x * 255 if scale == 255 else (x - 0.48) / 0.27)
    run = {"classifier": lambda: classifier(bad), "defense": lambda: TTC()(classifier, bad),
           "defended": lambda: Defended(TTC(), classifier)(bad), "attack": lambda: PGD(1 / 255, steps=1)(
               classifier, bad, y[:4])}[call]
    with pytest.raises(CounterclipError, match=words):
        run()


def test_nested_calls_are_checked_once(classifier, batch, monkeypatch):
    """An attack's steps call the classifier on x + delta; only the attack's own call checks its input."""
    seen = []
    real = inputs.check_pixels
    monkeypatch.setattr(inputs, "check_pixels", lambda x, where: seen.append(where) or real(x, where))
    x, y = batch
    PGD(4 / 255, steps=3)(Defended(TTC(), classifier), x[:4], y[:4])
    assert seen == ["PGD(classifier, x, y)"]
    seen.clear()
    classifier(x[:4])
    assert seen == ["ZeroShotClassifier"]  # the depth is back to 0 after the attack


def test_a_template_without_placeholder_is_refused(tiny_model):
    with pytest.raises(CounterclipError, match="must contain {} once"):
        counterclip.ZeroShotClassifier(tiny_model, ["cat", "dog"], ["a photo."])


@pytest.mark.parametrize("flags, shown", [
    (["--eps", "4"], "--eps=4 is above 1"), (["--defense", "ttc", "--ttc-eps", "4"], "--ttc-eps=4 is above 1"),
    (["--step-size", "2"], "--step-size=2 is above 1"),
    (["--defense", "ttc", "--defense-arg", "ttc.eps=4"], "ttc.eps=4"),
    (["--attack-arg", "pgd.step_size=3"], "did you mean 3/255?")])
def test_cli_budgets_above_one_fail_in_one_line(tmp_path, capsys, flags, shown):
    rc = main(["eval", "--dataset", "fashion-mnist", "--attack", "pgd", "--limit", "4", "--output",
               str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and shown in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.json"))


def test_evaluate_refuses_a_budget_above_one(tmp_path):
    with pytest.raises(ValueError, match="did you mean 4/255"):
        counterclip.evaluate(tmp_path, eps=[4], limit=4)
    with pytest.raises(ValueError, match="did you mean 4/255"):
        counterclip.evaluate(tmp_path, attacks=[PGD(1 / 255, steps=1)], eps=["4"], limit=4)
