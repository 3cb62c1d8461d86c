"""Report a run on class groups apart (``counterclip report RUN --classes seen=0-4 --classes unseen=5-9``).

A zero-shot proxy on one dataset fine-tunes on some classes and tests on all of them; the question is then how
each group of test images fares (every image still classified among all classes). A group is a view of each
record restricted to the samples whose label lies in the group, read from its ``.npz`` sidecar: accuracies and
their Wilson intervals are recomputed, and the per-sample worst case runs on the restricted sidecars. The group
records sit beside the originals under the dataset name ``DATASET [group]``, so every table, worst case and
figure reports them apart without knowing about groups.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from ..errors import CounterclipError
from ..evaluation.metrics import accuracy_metrics
from ..finetune.data import index_list
from .records import Record, Sidecar


def parse_class_groups(specs) -> dict[str, list[int]]:
    """``["seen=0-4", "unseen=5-9"]`` -> ``{"seen": [0..4], "unseen": [5..9]}``; ``NAME=`` takes ranges and
    comma lists of class indices (``0-2,7``)."""
    groups: dict[str, list[int]] = {}
    for spec in specs or ():
        name, sep, body = str(spec).partition("=")
        name = name.strip()
        try:
            classes = index_list(body)
        except ValueError:
            classes = []
        if not sep or not name or not classes or min(classes) < 0:
            raise CounterclipError(f"--classes {spec!r}: use NAME=CLASSES, e.g. seen=0-4 or odd=1,3,5")
        if name in groups:
            raise CounterclipError(f"--classes names the group {name!r} twice")
        groups[name] = sorted(set(classes))
    return groups


def group_dataset(dataset: str, group: str) -> str:
    return f"{dataset} [{group}]"  # records.is_class_group reads this form


def _restrict(r: Record, group: str, classes: list[int]) -> Record | None:
    side = r.sidecar()
    if side is None:
        return None
    keep = np.isin(side.label, classes)
    sub = Sidecar(**{f.name: getattr(side, f.name)[keep] for f in dataclasses.fields(Sidecar)})
    n = int(keep.sum())
    nc, nr = int(sub.clean_correct.sum()), int(sub.robust_correct.sum())
    metrics = {**accuracy_metrics("clean", nc, n), **accuracy_metrics("robust", nr, n), "n_samples": n}
    raw = copy.deepcopy(r.raw)
    # only what the group's samples give: per-draw and per-stage figures are whole-set facts
    raw["metrics"] = {**metrics, "acc1": metrics["robust_acc"] if r.attacked else metrics["clean_acc"]}
    raw["dataset"] = group_dataset(r.dataset, group)
    raw["class_group"] = {"name": group, "classes": classes, "of_dataset": r.dataset}
    for key in ("autoattack", "dataset_size", "count_check"):  # whole-set facts that a group does not share
        raw.pop(key, None)
    out = dataclasses.replace(r, raw=raw, dataset=raw["dataset"], clean_acc=metrics["clean_acc"],
                              robust_acc=metrics["robust_acc"], n_samples=n,
                              clean_ci=tuple(metrics["clean_acc_ci95"]), robust_ci=tuple(metrics["robust_acc_ci95"]))
    out._sidecar = sub
    return out


def add_class_groups(records: list[Record], groups: dict[str, list[int]], problems: list | None = None):
    """``records`` followed by each record restricted to each group (records without per-sample data are
    named in ``problems`` and left out of the groups)."""
    if not groups:
        return records
    out = list(records)
    missing = []
    for r in records:
        for name, classes in groups.items():
            g = _restrict(r, name, classes)
            if g is None:
                missing.append(r.path)
                break
            if g.n_samples:
                out.append(g)
    if missing and problems is not None:
        problems.append(f"--classes: {len(missing)} record(s) have no per-sample data and are left out of the "
                        f"class groups: {', '.join(missing)}")
    return out
