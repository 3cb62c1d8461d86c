"""Small pieces that tests in several kind folders share (an integration test and its reference yardstick
split from one file). A plain module, importable by name because pyproject.toml's pytest options put tests/ on
sys.path, like wds_mirror.py."""

from __future__ import annotations

import json

import torch

from counterclip import rng
from counterclip.defenses import TTC, Defended

EPS = 4 / 255


def gens(idx, stream):
    """Per-sample generators as the grid makes them, for fashion-mnist images ``idx``."""
    return rng.per_sample_generators(0, "fashion-mnist", list(idx), stream)


def wrong(model, x, y):
    with torch.no_grad():
        return model(x).argmax(-1) != y


def ttc_module(classifier, mode):
    """TTC counterattacking every image, as an nn.Module in the given differentiable mode (seeded)."""
    return Defended(TTC(tau_thres=float("inf")), classifier, differentiable=mode,
                    generator=torch.Generator().manual_seed(0))


def in_ball(x_adv, x, eps=EPS):
    return (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def small_grid_run(out):
    """The small oblivious grid (none and PGD-1 at 4/255, defenses none and rn, 8 images) whose records the
    CLIP_benchmark tests read."""
    from counterclip.evaluation.config import EvalConfig
    from counterclip.evaluation.grid import GridRunner

    cfg = EvalConfig(output=str(out), datasets=["fashion_mnist"], attacks=["none", "pgd"], eps=["4/255"], steps=1,
                     defenses=["none", "rn"], limit=8, batch_size=8, seed=0, probe_size=4)
    GridRunner(cfg, log=lambda *a: None).run()
    return out


def records(run_dir):
    return [json.loads(p.read_text()) for p in sorted((run_dir / "fashion-mnist").glob("*.json"))]
