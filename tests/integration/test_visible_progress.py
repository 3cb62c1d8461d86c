"""Adaptive attacks report progress per step without changing what they compute; a resumed run says so; the
demo prints its phases."""

import torch

import counterclip
from counterclip import progress
from counterclip.attacks.adaptive import build_adaptive
from counterclip.defenses import TTC
from counterclip.demo import run_demo
from counterclip.rng import per_sample_generators


def _attack(name, classifier, batch, listen):
    x, y = batch
    x, y = x[:8], y[:8]
    atk = build_adaptive(name, eps=8 / 255, steps=3, step_size=2 / 255, eot_samples=2)
    gens = per_sample_generators(0, "fashion-mnist", range(8), "adaptive")
    seen = []
    if listen:
        with progress.listening(seen.append):
            x_adv = atk(TTC(), classifier, x, y, generator=gens)
    else:
        x_adv = atk(TTC(), classifier, x, y, generator=gens)
    return x_adv, seen


def test_adaptive_attacks_advance_per_step_with_identical_results(classifier, batch, one_thread):
    for name in ("bpda-pgd", "gate-aware"):
        quiet, _ = _attack(name, classifier, batch, listen=False)
        loud, seen = _attack(name, classifier, batch, listen=True)
        assert torch.equal(quiet, loud)
        assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] == 1.0 and seen[0] < 1.0


def test_a_resumed_run_says_what_is_done(tmp_path):
    first, second = [], []
    kw = dict(attacks=["pgd"], eps=["4/255"], steps=1, limit=8, batch_size=4)
    counterclip.evaluate(tmp_path, log=first.append, **kw)
    assert not any("resuming" in str(m) for m in first)
    counterclip.evaluate(tmp_path, log=second.append, **kw)
    lines = [str(m) for m in second if "resuming" in str(m)]
    assert len(lines) == 1
    assert "1 finished record and" in lines[0] and "samples" in lines[0], lines[0]  # pgd x none: one record


def test_demo_prints_its_phases(one_thread):
    lines = []
    run_demo(limit=8, batch_size=8, log=lambda *a: lines.append(" ".join(map(str, a))))
    text = "\n".join(lines)
    assert "loading the embedded" in text and "calibrating" in text
    for k in range(1, 5):
        assert f"[{k}/4]" in text
    assert text.index("[1/4] clean:") < text.index("[1/4] clean done") < text.index("[2/4] PGD-10 1/255:")
