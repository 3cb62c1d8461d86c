"""The grid's side of composed attacks (AutoAttack, aa-paper) and of re-drawn evaluation (``--eval-draws``).

* Components of a composed attack get the per-sample streams their standalone attacks get
  (``attack:<name>:<eps>``; adaptive: ``adaptive:<name>-<mode>:<defense>:<eps>``), so a sample's result under
  the composition is never above any component's own.
* Each sample's breaking component is kept per chunk (``broken_by``), so the robust accuracy after each stage
  (AutoAttack's ``robust_accuracy_dict``) and the sidecar's ``broken_by`` survive resumes and sharding.
* ``--eval-draws R``: a randomised defense classifies each final input again on ``R - 1`` further draws of its
  randomness, on streams the attacker never used (``defense:<name>:draw<r>``); draw 0 is the record's
  ``robust_acc`` as before.
"""

from __future__ import annotations

import numpy as np
import torch


def min_classes(aname: str) -> int:
    from ..attacks.autoattack import MIN_CLASSES  # one table: the grid skips what AutoAttack drops

    return MIN_CLASSES.get(aname, 2)


def is_composite(attack) -> bool:
    return hasattr(attack, "component_names")


def attack_generators(ctx, attack, idx, stream_fmt: str = "attack:{name}:{eps}"):
    """Per-sample generators for ``attack``: a dict per component (plus ``clean``) for a composed attack."""
    if not is_composite(attack):
        return ctx.gens(idx, stream_fmt.format(name=attack.name, eps=attack.eps))
    names = attack.component_names(ctx.clf.num_classes) + ["clean"]
    return {n: ctx.gens(idx, stream_fmt.format(name=n, eps=attack.eps)) for n in names}


def stage_record(attack, broken_by: torch.Tensor, num_classes: int) -> dict:
    """The record's ``autoattack`` block from the per-sample breaking-stage indices."""
    names = attack.component_names(num_classes)
    b = broken_by.long()
    n = max(len(b), 1)
    stages = {"clean": float((b != -1).sum()) / n}
    for i, name in enumerate(names):
        stages[name] = float((b > i).sum()) / n
    cfg = attack.config()
    return {"version": cfg.get("version"), "components": names,
            "dropped": [c for c in cfg.get("components", []) if c not in names],
            "robust_accuracy_dict": stages,
            "broken_by_counts": {name: int((b == i).sum()) for i, name in enumerate(names)},
            "note": "robust accuracy of the attacked model (the undefended classifier for oblivious records, "
                    "the defense for adaptive ones) after each stage, judged on the attacker's side"}


def broken_by_labels(attack, broken_by: torch.Tensor, num_classes: int) -> np.ndarray:
    """Per sample: the component that broke it, "clean" (misclassified unattacked) or "" (never broken)."""
    names = attack.component_names(num_classes)
    lut = ["clean"] + names + [""]
    return np.array([lut[int(v) + 1] for v in broken_by.long().tolist()], dtype=f"<U{max(map(len, lut)) or 1}")


def eval_draws(ctx, defense, dname, x, y, idx, first_logits) -> torch.Tensor:
    """[B, R] correctness on R draws; column 0 is ``first_logits`` (the record's usual single draw)."""
    r = ctx.cfg.eval_draws
    cols = [first_logits.argmax(-1).cpu() == y.cpu()]
    if r > 1 and getattr(defense, "randomized", False):
        with torch.no_grad():
            for k in range(1, r):
                logits = defense(ctx.clf, x, generator=ctx.gens(idx, f"defense:{dname}:draw{k}"))
                cols.append(logits.argmax(-1).cpu() == y.cpu())
    else:  # deterministic: every draw is the same
        cols = cols * r
    return torch.stack(cols, 1)


def draws_metrics(correct_draws: torch.Tensor) -> dict:
    c = correct_draws.bool()
    n = max(c.shape[0], 1)
    return {"eval_draws": int(c.shape[1]), "robust_acc_draws": [float(v) / n for v in c.sum(0).tolist()],
            "robust_acc_all_draws": float(c.all(1).sum()) / n}
