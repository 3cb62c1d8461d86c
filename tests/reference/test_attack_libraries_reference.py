"""``Defended`` drops into attack libraries with no glue, in every mode: torchattacks (dev-only, skipped when
absent) and AutoAttack's own source (set COUNTERCLIP_AUTOATTACK_SRC to a checkout of fra31/auto-attack, or
install it). Plain autograd is checked in tests/integration/test_attack_libraries.py."""

import pytest
from helpers import EPS, in_ball as _in_ball, ttc_module as _ttc_module

MODES = ("auto", "bpda", "full", False)


def test_torchattacks_pgd_and_apgd_in_every_mode(classifier, batch):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = batch[0][:4], batch[1][:4]
    for mode in MODES:
        model = _ttc_module(classifier, mode)
        for atk in (torchattacks.PGD(model, eps=EPS, alpha=1 / 255, steps=2), torchattacks.APGD(model, eps=EPS, steps=2)):
            if mode is False:
                with pytest.raises(RuntimeError, match="inference-only mode"):
                    atk(x, y)
            else:
                assert _in_ball(atk(x, y), x), (mode, type(atk).__name__)



def test_autoattack_custom_in_every_mode(classifier, batch, capsys, autoattack_source):
    AutoAttack = autoattack_source.AutoAttack
    x, y = batch[0][:4], batch[1][:4]
    for mode in MODES:
        model = _ttc_module(classifier, mode)
        for attacks in (["apgd-ce", "apgd-t"], ["square"]):
            aa = AutoAttack(model, norm="Linf", eps=EPS, version="custom", attacks_to_run=attacks, verbose=False,
                            device="cpu", seed=0)
            aa.apgd.n_iter = aa.apgd_targeted.n_iter = 2
            aa.apgd_targeted.n_target_classes = 2
            aa.square.n_queries = 10
            if mode is False and attacks[0].startswith("apgd"):
                with pytest.raises(RuntimeError, match="inference-only mode"):
                    aa.run_standard_evaluation(x, y, bs=4)
            else:
                assert _in_ball(aa.run_standard_evaluation(x, y, bs=4), x), (mode, attacks)
    assert "randomized defense" in capsys.readouterr().out  # AutoAttack's own check saw TTC's randomness
