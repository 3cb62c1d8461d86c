"""``Defended`` works with plain autograd in every mode, under ``no_grad`` / ``inference_mode`` too (torchattacks
and AutoAttack's source through it: tests/reference/test_attack_libraries_reference.py)."""

import pytest
import torch
import torch.nn.functional as F

from helpers import ttc_module as _ttc_module

from counterclip.defenses import TTC, TTE, Defended, Defense

MODES = ("auto", "bpda", "full", False)


@pytest.mark.slow
def test_plain_autograd_in_every_mode_and_under_no_grad(classifier, batch):
    x, y = batch[0][:4], batch[1][:4]
    for mode in MODES:
        model = _ttc_module(classifier, mode)
        with torch.no_grad():
            a = model(x)
        with torch.inference_mode():
            b = model(x)
        assert a.shape == b.shape == (4, classifier.num_classes) and not a.requires_grad
        xi = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(xi), y)
        if mode is False:
            with pytest.raises(RuntimeError, match="inference-only mode") as err:
                torch.autograd.grad(loss, xi)
            msg = str(err.value)
            assert "\n" not in msg and "differentiable='bpda'" in msg and "differentiable='full'" in msg
        else:
            (g,) = torch.autograd.grad(loss, xi)
            assert torch.isfinite(g).all() and g.abs().sum() > 0, mode
    assert all(p.grad is None and not p.requires_grad for p in classifier.parameters())


def test_gradient_modes_predict_what_the_fast_path_predicts(classifier, batch):
    x = batch[0][:8]
    ttc = TTC(tau_thres=float("inf"))
    with torch.no_grad():
        fast = Defended(ttc, classifier, generator=torch.Generator().manual_seed(3))(x)
    for mode in ("auto", "bpda", "full"):
        xi = x.clone().requires_grad_(True)
        slow = Defended(ttc, classifier, differentiable=mode, generator=torch.Generator().manual_seed(3))(xi)
        assert torch.equal(slow.argmax(-1), fast.argmax(-1)) and torch.allclose(slow, fast, atol=1e-3), mode


class _Blur(Defense):
    """A defense with no differentiable mode of its own (as a user's might be)."""

    name = "blur"

    def predict(self, classifier, x, generator=None):
        return classifier(F.avg_pool2d(x, 3, 1, 1))


def test_a_defense_without_modes_gets_generic_bpda_and_full_is_refused(classifier, batch):
    x = batch[0][:4].clone().requires_grad_(True)
    out = Defended(_Blur(), classifier)(x)
    with torch.no_grad():
        assert torch.allclose(out, _Blur()(classifier, x))
    (g,) = torch.autograd.grad(out.sum(), x)
    (ref,) = torch.autograd.grad(classifier(x).sum(), x)
    assert torch.allclose(g, ref)  # the whole defense is identity on the backward pass
    with pytest.raises(ValueError, match="no differentiable mode 'full'.*bpda"):
        Defended(_Blur(), classifier, differentiable="full")
    assert TTE.differentiable_modes == ("full", "bpda")
