"""Held-out clean and robust accuracy of the weights being trained, on the part kept out of the training split
(the dataset's packaged list, else a seeded 10 % per class; ``data.py``): what ``--select heldout`` and the lr
calibration read. The attack is counterclip's PGD at the run's ``eval_eps`` with per-sample random starts, on the
zero-shot classifier over the trained classes."""

from __future__ import annotations

import torch

from ..budgets import eps_str
from ..evaluation.sampling import select_indices
from .data import load_batch


@torch.no_grad()
def _correct(logits, y) -> int:
    return int((logits.argmax(-1) == y).sum())


def evaluate_heldout(trainer, held_idx: torch.Tensor, batch: int = 256) -> dict:
    from .. import rng
    from ..attacks.pgd import PGD

    cfg, ctx, tower = trainer.cfg, trainer.ctx, trainer.tower
    idx = held_idx[select_indices(len(held_idx), cfg["eval_limit"], cfg["seed"])]
    attack = PGD(cfg["eval_eps"], steps=cfg["eval_steps"], step_size=cfg["eval_step_size"])

    def classify(x):
        return ctx.logits(ctx.embed(tower, x), scale=trainer.model.logit_scale)

    was_training = tower.training
    tower.eval()
    clean = robust = 0
    for start in range(0, len(idx), batch):
        part = idx[start:start + batch]
        x, y = load_batch(trainer.loaded.dataset, part, trainer.class_map)
        x, y = x.to(trainer.device), y.to(trainer.device)
        with torch.no_grad():
            clean += _correct(classify(x), y)
        gens = rng.per_sample_generators(cfg["seed"], cfg["dataset"], part, stream="finetune-heldout")
        x_adv = attack(classify, x, y, generator=gens)
        with torch.no_grad():
            robust += _correct(classify(x_adv), y)
    tower.train(was_training)
    n = max(len(idx), 1)
    return {"heldout_n": len(idx), "heldout_clean_acc": clean / n, "heldout_robust_acc": robust / n,
            "heldout_eps": cfg["eval_eps"], "heldout_eps_str": eps_str(cfg["eval_eps"]),
            "heldout_attack": f"PGD-{cfg['eval_steps']} step {eps_str(cfg['eval_step_size'])}"}
