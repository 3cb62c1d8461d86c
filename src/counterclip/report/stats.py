"""The numbers behind the report: averages, per-sample worst case over attacks, and tau's AUROC."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..evaluation.metrics import wilson_interval
from .records import DEFENSE_ORDER, THREAT_ORDER, ATTACK_ORDER, Record, order_key


def auroc(positive, negative) -> float:
    """Area under the ROC curve of ``score`` separating positives from negatives (higher = more positive).

    Mann-Whitney: AUROC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg) with R_pos the sum of the positives'
    ranks in the pooled sample, tied values sharing their average rank (so a tie counts one half). Non-finite
    scores are dropped; NaN when either side is then empty.
    """
    pos = np.asarray(positive, dtype=np.float64).reshape(-1)
    neg = np.asarray(negative, dtype=np.float64).reshape(-1)
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    n_pos, n_neg = len(pos), len(neg)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    pooled = np.concatenate([pos, neg])
    uniq, inverse, counts = np.unique(pooled, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1            # rank of the first member of each tie group
    avg_rank = first_rank + (counts - 1) / 2.0
    r_pos = avg_rank[inverse[:n_pos]].sum()
    return float((r_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def tau_auroc(clean_tau, adv_tau) -> float:
    """tau as a detector of adversarial inputs: adversarial = positive, lower tau = more suspicious."""
    return auroc(-np.asarray(adv_tau, dtype=np.float64), -np.asarray(clean_tau, dtype=np.float64))


def wilson(acc: float, n: int | None) -> tuple[float, float]:
    """The 95 % Wilson score interval of an accuracy measured on ``n`` samples; (nan, nan) without ``n``.

    Records keep the accuracy as a fraction k/n, so k is recovered by rounding and the interval is the one the
    eval step computes (evaluation.metrics.wilson_interval).
    """
    if not n or acc is None or not math.isfinite(acc):
        return (float("nan"), float("nan"))
    return wilson_interval(int(round(acc * n)), int(n))


def mean_or_nan(values) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(sum(vals) / len(vals)) if vals else float("nan")


def _per_index_and(index: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique sample ids and, for each, whether every occurrence was correct."""
    uniq, inverse = np.unique(index, return_inverse=True)
    ok = np.ones(len(uniq), dtype=bool)
    np.logical_and.at(ok, inverse, correct)
    return uniq, ok


@dataclass
class WorstCase:
    model: str
    dataset: str
    eps: float
    eps_str: str
    defense: str
    records: list[Record]
    robust_acc: float = float("nan")
    n: int = 0
    exact: bool = True             # False: some record has no usable sidecar, robust_acc is min() (an upper bound)
    notes: list[str] = field(default_factory=list)

    @property
    def attack_labels(self) -> list[str]:
        return [r.attack_label for r in self.records]


def worst_case(records: list[Record]) -> tuple[float, int, bool, list[str]]:
    """Per-sample worst case over ``records`` (same model, dataset, eps, defense; different attacks).

    A sample is robust only if it is correct under every attack: the AND of the sidecars' ``robust_correct``
    aligned by ``index``, over the samples every record evaluated. Without sidecars for all records this falls
    back to the smallest robust accuracy, which is only an upper bound on the worst case.
    Returns (robust_acc, n, exact, notes).
    """
    notes: list[str] = []
    sidecars = [r.sidecar() for r in records]
    if any(s is None for s in sidecars):
        missing = [f"{r.path} ({r.sidecar_problem})" for r, s in zip(records, sidecars) if s is None]
        accs = [r.robust_acc for r in records if math.isfinite(r.robust_acc)]
        ns = [r.n_samples for r in records if r.n_samples]
        if len(records) == 1:
            return records[0].robust_acc, records[0].n_samples or 0, True, notes
        notes.append("upper bound (min over attacks): no per-sample data for " + "; ".join(missing))
        return (min(accs) if accs else float("nan")), (min(ns) if ns else 0), False, notes
    per = [_per_index_and(s.index, s.robust_correct) for s in sidecars]
    common = per[0][0]
    for uniq, _ in per[1:]:
        common = np.intersect1d(common, uniq, assume_unique=True)
    sizes = {len(u) for u, _ in per}
    if len(sizes) > 1 or any(len(u) != len(common) for u, _ in per):
        notes.append(f"samples differ between attacks; worst case over the {len(common)} common samples")
    if len(common) == 0:
        return float("nan"), 0, True, notes
    robust = np.ones(len(common), dtype=bool)
    for uniq, ok in per:
        robust &= ok[np.searchsorted(uniq, common)]
    return float(robust.mean()), int(len(common)), True, notes


def worst_cases(records: list[Record]) -> list[WorstCase]:
    """One WorstCase per (model, dataset, eps, defense) over all its attacked records, both threat models."""
    cells: dict[tuple, Record] = {}
    for r in sorted(records, key=lambda r: r.path):     # duplicates of one cell: the last by path, as the tables
        if r.attacked:
            cells[cell_key(r)] = r
    groups: dict[tuple, list[Record]] = {}
    for r in cells.values():
        groups.setdefault((r.model_label, r.dataset, r.eps_key, r.defense_label), []).append(r)
    out = []
    for (model, dataset, _, defense), recs in groups.items():
        recs = sorted(recs, key=lambda r: (order_key(r.threat_model, THREAT_ORDER),
                                           order_key(r.attack, ATTACK_ORDER), r.attack_label, r.path))
        acc, n, exact, notes = worst_case(recs)
        out.append(WorstCase(model, dataset, recs[0].eps, recs[0].eps_str, defense, recs, acc, n, exact, notes))
    out.sort(key=lambda w: (w.model, w.dataset, w.eps, order_key(w.records[0].defense, DEFENSE_ORDER), w.defense))
    return out


@dataclass
class TauStats:
    record: Record
    n_clean: int
    n_adv: int
    mean_clean: float
    mean_adv: float
    auroc: float
    tau_thres: float | None
    gated_clean: float            # fraction of clean inputs with tau < tau_thres (TTC counterattacks them)
    gated_adv: float


def tau_stats(records: list[Record]) -> list[TauStats]:
    """Per attacked record with any finite tau: mean clean / adversarial tau and tau's AUROC."""
    out = []
    for r in records:
        if not r.attacked:
            continue
        s = r.sidecar()
        if s is None:
            continue
        clean, adv = s.clean_tau[np.isfinite(s.clean_tau)], s.adv_tau[np.isfinite(s.adv_tau)]
        if len(clean) == 0 and len(adv) == 0:
            continue
        thres = r.defense_params.get("tau_thres")
        thres = float(thres) if isinstance(thres, (int, float)) else None
        gated = (lambda t: float((t < thres).mean()) if thres is not None and len(t) else float("nan"))
        out.append(TauStats(
            r, len(clean), len(adv), float(clean.mean()) if len(clean) else float("nan"),
            float(adv.mean()) if len(adv) else float("nan"), tau_auroc(s.clean_tau, s.adv_tau), thres,
            gated(clean), gated(adv)))
    return out


def find_duplicates(records: list[Record]) -> list[tuple[tuple, list[Record]]]:
    """Records that would fill the same table cell (a re-run, or a copy): the report uses the last by path."""
    cells: dict[tuple, list[Record]] = {}
    for r in records:
        cells.setdefault(cell_key(r), []).append(r)
    return [(k, v) for k, v in cells.items() if len(v) > 1]


def cell_key(r: Record) -> tuple:
    return (r.model_label, r.threat_model, r.attack_label, r.eps_key, r.dataset, r.defense_label)
