"""Figures (PNG, matplotlib's Agg backend, imported lazily): tau histograms, accuracy vs eps, tau AUROC bars."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from .records import ATTACK_ORDER, DEFENSE_ORDER, THREAT_ORDER, Record, order_key, slug
from .stats import TauStats, mean_or_nan

MAX_PANELS = 24


def _matplotlib():
    """matplotlib with the Agg backend; figures are built with the object API so no pyplot state leaks."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:   # do not switch the backend under a user's live pyplot
        matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def tau_histograms(records: list[Record], fig_dir: Path) -> list[Path]:
    """Per dataset: clean vs adversarial tau, one panel per (attack, eps, defense) record with finite taus."""
    Figure = _matplotlib()
    by_ds: dict[tuple, list] = {}
    for r in records:
        if not r.attacked or (s := r.sidecar()) is None:
            continue
        clean, adv = s.clean_tau[np.isfinite(s.clean_tau)], s.adv_tau[np.isfinite(s.adv_tau)]
        if len(clean) or len(adv):
            by_ds.setdefault((r.model_label, r.dataset), []).append((r, clean, adv))
    many_models = len({m for m, _ in by_ds}) > 1
    out = []
    for (model, dataset), panels in sorted(by_ds.items()):
        panels.sort(key=lambda p: (order_key(p[0].threat_model, THREAT_ORDER), order_key(p[0].attack, ATTACK_ORDER),
                                   p[0].attack_label, p[0].eps, order_key(p[0].defense, DEFENSE_ORDER)))
        panels = panels[:MAX_PANELS]
        ncol = min(3, len(panels))
        nrow = math.ceil(len(panels) / ncol)
        fig = Figure(figsize=(4.2 * ncol, 3.2 * nrow + 0.4), layout="constrained")
        for i, (r, clean, adv) in enumerate(panels):
            ax = fig.add_subplot(nrow, ncol, i + 1)
            both = np.concatenate([clean, adv])
            lo, hi = float(both.min()), float(both.max())
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
            if len(clean):
                ax.hist(clean, bins=bins, alpha=0.55, label=f"clean (n={len(clean)})", color="tab:blue")
            if len(adv):
                ax.hist(adv, bins=bins, alpha=0.55, label=f"adversarial (n={len(adv)})", color="tab:red")
            thres = r.defense_params.get("tau_thres")
            if isinstance(thres, (int, float)):
                ax.axvline(float(thres), color="k", linestyle="--", linewidth=1, label=f"tau_thres={thres:g}")
            ax.set_title(f"{r.attack_label} ε={r.eps_str} ({r.threat_model}), {r.defense_label}", fontsize=9)
            ax.set_xlabel("τ")
            ax.set_ylabel("count")
            ax.legend(fontsize=7)
        fig.suptitle(f"τ on {dataset}" + (f" — {model}" if many_models else ""))
        name = f"tau_hist_{slug(dataset)}" + (f"_{slug(model)}" if many_models else "") + ".png"
        out.append(_save(fig, fig_dir / name))
    return out


def _clean_at_zero(recs: list[Record], defense: str, dataset: str, model: str) -> float:
    none = [r.clean_acc for r in recs if r.attack == "none" and r.defense_label == defense
            and r.dataset == dataset and r.model_label == model]
    return mean_or_nan(none)


def accuracy_vs_eps(records: list[Record], fig_dir: Path) -> list[Path]:
    """Per (dataset, attack): robust accuracy vs eps, one line per defense; clean accuracy plotted at eps 0."""
    Figure = _matplotlib()
    groups: dict[tuple, list[Record]] = {}
    for r in records:
        if r.attacked:
            groups.setdefault((r.model_label, r.dataset, r.threat_model, r.attack_label), []).append(r)
    many_models = len({g[0] for g in groups}) > 1
    out = []
    for (model, dataset, threat, label), recs in sorted(groups.items()):
        fig = Figure(figsize=(5.5, 4), layout="constrained")
        ax = fig.add_subplot(1, 1, 1)
        labels = {r.defense_label: r.defense for r in recs}
        for d in sorted(labels, key=lambda lab: (order_key(labels[lab], DEFENSE_ORDER), lab)):
            drecs = sorted((r for r in recs if r.defense_label == d), key=lambda r: (r.eps, r.path))
            by_eps = {r.eps_key: r for r in drecs}          # duplicates: the last by path
            clean = _clean_at_zero(records, d, dataset, model)
            if not math.isfinite(clean):                  # no attack-free record: the attacked runs' clean acc
                clean = mean_or_nan([r.clean_acc for r in drecs])
            xs = [0.0] + [by_eps[k].eps * 255 for k in sorted(by_eps)]
            ys = [clean] + [by_eps[k].robust_acc for k in sorted(by_eps)]
            ax.plot(xs, [100 * y for y in ys], marker="o", label=d)
        ax.set_xlabel("ε (×1/255)")
        ax.set_ylabel("accuracy (%)  [ε = 0: clean]")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{dataset}: {label} ({threat})" + (f"\n{model}" if many_models else ""), fontsize=10)
        name = (f"acc_vs_eps_{slug(dataset)}_{slug(label)}_{threat}" + (f"_{slug(model)}" if many_models else "")
                + ".png")
        out.append(_save(fig, fig_dir / name))
    return out


def auroc_bars(taus: list[TauStats], fig_dir: Path) -> list[Path]:
    """tau's AUROC per dataset / attack / eps (/ defense) as a bar chart, with the chance level at 0.5."""
    items = [t for t in taus if math.isfinite(t.auroc)]
    if not items:
        return []
    Figure = _matplotlib()
    defenses = {t.record.defense_label for t in items}
    names = [f"{t.record.dataset}\n{t.record.attack_label} {t.record.eps_str}"
             + (f"\n{t.record.defense_label}" if len(defenses) > 1 else "") for t in items]
    fig = Figure(figsize=(max(5.0, 0.7 * len(items) + 2), 4.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    vals = [t.auroc for t in items]
    colors = ["tab:red" if v < 0.5 else "tab:green" for v in vals]
    bars = ax.bar(range(len(items)), vals, color=colors)
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in vals], fontsize=7)
    ax.axhline(0.5, color="k", linestyle="--", linewidth=1, label="chance (0.5)")
    ax.set_xticks(range(len(items)))
    tilt = len(items) > 6
    ax.set_xticklabels(names, fontsize=7, rotation=45 if tilt else 0, ha="right" if tilt else "center")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("AUROC of −τ (adversarial = positive)")
    ax.set_title("τ as a detector of adversarial inputs")
    ax.legend(fontsize=8)
    return [_save(fig, fig_dir / "tau_auroc.png")]


def make_figures(records: list[Record], taus: list[TauStats], fig_dir: Path) -> list[Path]:
    return tau_histograms(records, fig_dir) + accuracy_vs_eps(records, fig_dir) + auroc_bars(taus, fig_dir)
