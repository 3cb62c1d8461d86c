"""The baseline defenses do what their papers say, and their differentiable modes keep a graph."""

import torch

from counterclip.defenses import TTE, AntiAdversary, Defended, HedgeDefence, build_defense


def test_tte_averages_flips_and_padded_crops(classifier, batch):
    x = batch[0][:4]
    tte = TTE()
    views = tte.views(x)
    assert len(views) == 10 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[5], x.flip(-1))
    with torch.no_grad():
        expect = torch.stack([classifier(v) for v in views]).mean(0)
    assert torch.allclose(tte(classifier, x), expect, atol=1e-5)


def test_anti_adversary_moves_toward_the_predicted_class(classifier, batch):
    x = batch[0][:16]
    aa = AntiAdversary(eps=4 / 255, steps=2)
    with torch.no_grad():
        before = classifier(x)
    y_hat = before.argmax(-1)
    delta = aa.purify(classifier, x)
    assert delta.abs().max() <= 4 / 255 + 1e-6 and delta.abs().max() > 0
    with torch.no_grad():
        after = classifier(x + delta)
    ce = torch.nn.functional.cross_entropy
    assert ce(after, y_hat) < ce(before, y_hat)


def test_hedge_ascends_the_all_class_loss(classifier, batch):
    x = batch[0][:16]
    hd = HedgeDefence(eps=4 / 255, steps=2)
    g = torch.Generator().manual_seed(0)
    start = hd.start(x, torch.Generator().manual_seed(0))
    delta = hd.purify(classifier, x, g)
    loss = lambda d: -torch.log_softmax(classifier(x + d), -1).sum()  # noqa: E731
    with torch.no_grad():
        assert loss(delta) > loss(start)
    assert delta.abs().max() <= 4 / 255 + 1e-6


def test_differentiable_modes_reach_the_input_and_not_the_weights(classifier, batch):
    x = batch[0][:4]
    for name in ("rn", "tte", "anti-adversary", "hedge"):
        for mode in ("full", "bpda"):
            xi = x.clone().requires_grad_(True)
            out = Defended(build_defense(name), classifier, differentiable=mode, generator=torch.Generator().manual_seed(0))(xi)
            out.sum().backward()
            assert xi.grad is not None and xi.grad.abs().sum() > 0, (name, mode)
    assert all(p.grad is None for p in classifier.parameters())
