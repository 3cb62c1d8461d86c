"""Figures (PNG, matplotlib's Agg backend, imported lazily): accuracy vs eps per attack, the worst case over every
attack, tau histograms and tau's AUROC. Every defense has one look (style.defense_style) in every figure."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import numpy as np

from .records import ATTACK_ORDER, DEFENSE_ORDER, THREAT_ORDER, Record, order_key, slug
from .stats import TauStats, WorstCase, mean_or_nan, wilson
from .style import defense_style

PANELS_PER_PAGE = 12       # tau histograms: 4 rows of 3; more panels go on further pages, none is dropped


def _matplotlib():
    """matplotlib with the Agg backend; figures are built with the object API so no pyplot state leaks."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:   # do not switch the backend under a user's live pyplot
        matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    return path


def _defense_sorted(labels: dict[str, str]) -> list[str]:
    """Defense labels in display order; ``labels`` maps label -> defense name."""
    return sorted(labels, key=lambda lab: (order_key(labels[lab], DEFENSE_ORDER), lab))


def _eps_lines(fig, ax, series: list[tuple], ticks: dict[float, str]) -> None:
    """One line per defense: series = (name, label, xs, ys, ns, exact); xs in units of 1/255, ys fractions.

    Defenses that coincide (rn on top of none) stay visible: each has its own marker and line style, the
    markers are hollow and shrink as more lines are drawn over them, and each line is dodged sideways a little.
    """
    span = max((max(s[2]) for s in series if len(s[2])), default=1.0) or 1.0
    k = len(series)
    for i, (name, label, xs, ys, ns, exact) in enumerate(series):
        st = defense_style(name, label)
        dx = (i - (k - 1) / 2) * 0.012 * span
        x = np.asarray(xs, dtype=float) + dx
        y = 100 * np.asarray(ys, dtype=float)
        ci = np.array([wilson(a, n) if ok else (math.nan, math.nan) for a, n, ok in zip(ys, ns, exact)])
        ax.fill_between(x, 100 * ci[:, 0], 100 * ci[:, 1], color=st.colour, alpha=0.1, linewidth=0, zorder=1)
        for edge in (ci[:, 0], ci[:, 1]):   # thin edges: which band is whose where several overlap
            ax.plot(x, 100 * edge, color=st.colour, linestyle=st.linestyle, linewidth=0.6, alpha=0.45, zorder=2)
        ax.plot(x, y, color=st.colour, linestyle=st.linestyle, linewidth=1.6, marker=st.marker,
                markersize=max(4.0, 10.0 - 1.2 * i), markerfacecolor="none", markeredgewidth=1.6,
                label=label, zorder=3 + i)
        for xi, yi, ok in zip(x, y, exact):
            if not ok:  # min over attacks without per-sample data: only an upper bound
                ax.annotate("≤", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8,
                            color=st.colour)
    if len(ticks) <= 7:
        ax.set_xticks(sorted(ticks), [ticks[t] if t else "0\n(clean)" for t in sorted(ticks)])
        ax.set_xlabel("ε;  shaded: 95 % Wilson interval")
    else:  # many budgets: one fraction per tick would overlap
        ax.set_xlabel("ε (× 1/255; 0: clean);  shaded: 95 % Wilson interval")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=min(4, k), fontsize=8, frameon=False)


def _clean_point(records: list[Record], defense: str, dataset: str, model: str, attacked: list[Record]):
    """Clean accuracy and n of a defense: its attack-free record, else the mean over its attacked records."""
    none = [r for r in records if r.attack == "none" and r.defense_label == defense and r.dataset == dataset
            and r.model_label == model]
    src = none or attacked
    ns = [r.n_samples for r in src if r.n_samples]
    acc = mean_or_nan([r.clean_acc for r in src])
    # one shared sample set (the usual case) gives an exact interval; several differing ones: no band
    return acc, (ns[0] if len(set(ns)) == 1 else None)


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
        labels = {r.defense_label: r.defense for r in recs}
        ticks = {0.0: "0"}
        series = []
        for d in _defense_sorted(labels):
            drecs = sorted((r for r in recs if r.defense_label == d), key=lambda r: (r.eps, r.path))
            by_eps = {r.eps_key: r for r in drecs}          # duplicates: the last by path
            clean, n_clean = _clean_point(records, d, dataset, model, drecs)
            pts = [by_eps[k] for k in sorted(by_eps)]
            ticks.update({r.eps * 255: r.eps_str for r in pts})
            series.append((labels[d], d, [0.0] + [r.eps * 255 for r in pts], [clean] + [r.robust_acc for r in pts],
                           [n_clean] + [r.n_samples for r in pts], [True] * (len(pts) + 1)))
        fig = Figure(figsize=(5.2, 4.2), layout="constrained")
        ax = fig.add_subplot(1, 1, 1)
        _eps_lines(fig, ax, series, ticks)
        ax.set_title(f"{dataset}: {label} ({threat})" + (f"\n{model}" if many_models else ""), fontsize=10)
        name = (f"acc_vs_eps_{slug(dataset)}_{slug(label)}_{threat}" + (f"_{slug(model)}" if many_models else "")
                + ".png")
        out.append(_save(fig, fig_dir / name))
    return out


def _attacks_text(worst: list[WorstCase]) -> str:
    """The attacks a worst-case figure covers, in at most three short lines."""
    by_threat: dict[str, set] = {}
    for w in worst:
        for r in w.records:
            by_threat.setdefault(r.threat_model, set()).add(r.attack_label)
    threats = sorted(by_threat, key=lambda t: order_key(t, THREAT_ORDER))
    text = "per sample, over " + "; ".join(f"{', '.join(sorted(by_threat[t]))} ({t})" for t in threats)
    lines = textwrap.wrap(text, 62, break_on_hyphens=False)
    if len(lines) > 2:
        text = "per sample, over " + " and ".join(f"{len(by_threat[t])} {t}" for t in threats) + \
            " attacks (named in worst_case.csv)"
    by_defense: dict[str, list] = {}
    for w in worst:
        by_defense.setdefault(w.defense, []).append({(r.threat_model, r.attack_label) for r in w.records})
    if any(any(s != sets[0] for s in sets) for sets in by_defense.values()):
        text += "; not every attack ran at every ε (see worst_case.csv)"
    return "\n".join(textwrap.wrap(text, 62, break_on_hyphens=False))


def worst_case_figures(records: list[Record], worst: list[WorstCase], fig_dir: Path) -> list[Path]:
    """Per dataset: the per-sample worst case over every attack (oblivious and adaptive) vs eps, per defense."""
    if not worst:
        return []
    Figure = _matplotlib()
    groups: dict[tuple, list[WorstCase]] = {}
    for w in worst:
        groups.setdefault((w.model, w.dataset), []).append(w)
    many_models = len({m for m, _ in groups}) > 1
    out = []
    for (model, dataset), ws in sorted(groups.items()):
        labels = {w.defense: w.records[0].defense for w in ws}
        ticks = {0.0: "0"}
        series = []
        for d in _defense_sorted(labels):
            pts = sorted((w for w in ws if w.defense == d), key=lambda w: w.eps)
            attacked = [r for w in pts for r in w.records]
            clean, n_clean = _clean_point(records, d, dataset, model, attacked)
            ticks.update({w.eps * 255: w.eps_str for w in pts})
            series.append((labels[d], d, [0.0] + [w.eps * 255 for w in pts], [clean] + [w.robust_acc for w in pts],
                           [n_clean] + [w.n for w in pts], [True] + [w.exact for w in pts]))
        fig = Figure(figsize=(5.2, 4.4), layout="constrained")
        ax = fig.add_subplot(1, 1, 1)
        _eps_lines(fig, ax, series, ticks)
        ax.set_ylabel("worst-case robust accuracy (%)")
        sub = _attacks_text(ws)
        ax.set_title(f"{dataset}: worst case over every attack" + (f"\n{model}" if many_models else "")
                     + f"\n{sub}", fontsize=9)
        if not all(w.exact for w in ws):
            ax.set_xlabel(ax.get_xlabel() + ";  ≤: upper bound (no per-sample data)")
        name = f"worst_case_{slug(dataset)}" + (f"_{slug(model)}" if many_models else "") + ".png"
        out.append(_save(fig, fig_dir / name))
    return out


def tau_histograms(records: list[Record], fig_dir: Path) -> tuple[list[Path], list[str]]:
    """Per dataset: clean vs adversarial tau, one panel per (attack, eps, defense) record with finite taus, in
    pages of PANELS_PER_PAGE panels. Returns the files and a note for each dataset that needs several pages."""
    Figure = _matplotlib()
    by_ds: dict[tuple, list] = {}
    for r in records:
        if not r.attacked or (s := r.sidecar()) is None:
            continue
        clean, adv = s.clean_tau[np.isfinite(s.clean_tau)], s.adv_tau[np.isfinite(s.adv_tau)]
        if len(clean) or len(adv):
            by_ds.setdefault((r.model_label, r.dataset), []).append((r, clean, adv))
    many_models = len({m for m, _ in by_ds}) > 1
    out, notes = [], []
    for (model, dataset), panels in sorted(by_ds.items()):
        panels.sort(key=lambda p: (order_key(p[0].threat_model, THREAT_ORDER), order_key(p[0].attack, ATTACK_ORDER),
                                   p[0].attack_label, p[0].eps, order_key(p[0].defense, DEFENSE_ORDER)))
        pages = math.ceil(len(panels) / PANELS_PER_PAGE)
        stem = f"tau_hist_{slug(dataset)}" + (f"_{slug(model)}" if many_models else "")
        if pages > 1:
            notes.append(f"τ histograms of {dataset}" + (f" ({model})" if many_models else "")
                         + f": {len(panels)} panels on {pages} pages of up to {PANELS_PER_PAGE}")
        for page in range(pages):
            chunk = panels[page * PANELS_PER_PAGE:(page + 1) * PANELS_PER_PAGE]
            ncol = min(3, len(chunk))
            nrow = math.ceil(len(chunk) / ncol)
            fig = Figure(figsize=(3.8 * ncol, 2.9 * nrow + 0.5), layout="constrained")
            for i, (r, clean, adv) in enumerate(chunk):
                ax = fig.add_subplot(nrow, ncol, i + 1)
                st = defense_style(r.defense, r.defense_label)
                both = np.concatenate([clean, adv])
                lo, hi = float(both.min()), float(both.max())
                nbins = int(np.clip(2 * math.sqrt(max(len(clean), len(adv))), 8, 30))
                bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, nbins + 1)
                if len(clean):
                    ax.hist(clean, bins=bins, color="0.7", label=f"clean (n={len(clean)})")
                if len(adv):
                    ax.hist(adv, bins=bins, histtype="step", linewidth=1.8, color=st.colour,
                            label=f"adversarial (n={len(adv)})")
                thres = r.defense_params.get("tau_thres")
                if isinstance(thres, (int, float)):
                    width = max(hi - lo, 1e-6)
                    if lo - 0.15 * width <= thres <= hi + 0.15 * width:
                        ax.axvline(float(thres), color="k", linestyle="--", linewidth=1,
                                   label=f"τ_thres={thres:g}")
                    else:  # drawn to scale, a far-off gate would squeeze the histogram into a sliver
                        right = thres > hi
                        text = (f"τ_thres={thres:g} →\n(every input below)" if right
                                else f"← τ_thres={thres:g}\n(every input above)")
                        ax.annotate(text, (0.98 if right else 0.02, 0.5), xycoords="axes fraction", fontsize=7,
                                    ha="right" if right else "left", va="center")
                ax.yaxis.get_major_locator().set_params(integer=True)
                ax.set_title(f"{r.defense_label}: {r.attack_label} ε={r.eps_str} ({r.threat_model})", fontsize=8.5,
                             color=st.colour)
                ax.set_xlabel("τ", fontsize=8)
                ax.set_ylabel("count", fontsize=8)
                ax.tick_params(labelsize=7)
                ax.legend(fontsize=6.5)
            page_text = f" (page {page + 1} of {pages})" if pages > 1 else ""
            fig.suptitle(f"τ on {dataset}" + (f" — {model}" if many_models else "") + page_text
                         + ": clean (grey) vs adversarial (outline)", fontsize=10)
            name = stem + (f"_p{page + 1}of{pages}" if pages > 1 else "") + ".png"
            out.append(_save(fig, fig_dir / name))
    return out, notes


def _auroc_rows(ts: list[TauStats]) -> list[tuple]:
    """(y label, AUROC, defense name or None, defense label) per bar. An oblivious attack's inputs are made on the
    undefended model, so every defense sees the same ones and tau (measured on the model, not the defense) is
    the same: such runs share one bar instead of repeating it once per defense."""
    rows: list[tuple] = []
    merged: list[list[TauStats]] = []
    for t in ts:
        last = merged[-1][-1] if merged else None
        r = t.record
        if (last is not None and r.threat_model == "oblivious" == last.record.threat_model
                and (r.attack_label, r.eps_key) == (last.record.attack_label, last.record.eps_key)
                and t.auroc == last.auroc):
            merged[-1].append(t)
        else:
            merged.append([t])
    for run in merged:
        r = run[0].record
        head = f"{r.attack_label} {r.eps_str} ({'obl.' if r.threat_model == 'oblivious' else r.threat_model})"
        if len(run) == 1:
            rows.append((f"{head} · {r.defense_label}", run[0].auroc, r.defense, r.defense_label))
        else:
            names = ", ".join(t.record.defense_label for t in run)
            rows.append((f"{head} · {names if len(names) <= 28 else f'{len(run)} defenses'}", run[0].auroc, None,
                         None))
    return rows


def auroc_bars(taus: list[TauStats], fig_dir: Path) -> list[Path]:
    """tau's AUROC as a detector of adversarial inputs: one horizontal bar per record, labelled on the left,
    coloured by defense, grouped by dataset; the chance level (0.5) dashed."""
    items = [t for t in taus if math.isfinite(t.auroc)]
    if not items:
        return []
    Figure = _matplotlib()
    key = (lambda t: (t.record.model_label, t.record.dataset, order_key(t.record.threat_model, THREAT_ORDER),
                      order_key(t.record.attack, ATTACK_ORDER), t.record.attack_label, t.record.eps,
                      order_key(t.record.defense, DEFENSE_ORDER), t.record.defense_label))
    items.sort(key=key)
    groups: dict[tuple, list[TauStats]] = {}
    for t in items:
        groups.setdefault((t.record.model_label, t.record.dataset), []).append(t)
    many_models = len({m for m, _ in groups}) > 1
    n_bars = {g: len(_auroc_rows(ts)) for g, ts in groups.items()}
    longest = max(len(b[0]) for ts in groups.values() for b in _auroc_rows(ts))
    fig = Figure(figsize=(4.4 + 0.06 * longest, 1.1 + 0.28 * sum(n_bars.values()) + 0.45 * len(groups)),
                 layout="constrained")
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": list(n_bars.values())})[:, 0]
    seen: dict[str, object] = {}
    for ax, ((model, dataset), ts) in zip(axes, groups.items()):
        bars = _auroc_rows(ts)
        ys = np.arange(len(bars))[::-1]
        for y, (text, value, defense, label) in zip(ys, bars):
            if defense is None:     # one input set shared by several defenses: one neutral, hatched bar
                bar = ax.barh(y, value, height=0.7, color="white", edgecolor="0.3", hatch="///")
                seen.setdefault("same inputs, several defenses", bar)
            else:
                bar = ax.barh(y, value, height=0.7, color=defense_style(defense, label).colour, alpha=0.85)
                seen.setdefault(label, bar)
            ax.text(value + 0.01, y, f"{value:.2f}", va="center", fontsize=7)
        ax.set_yticks(ys, [b[0] for b in bars], fontsize=7.5)
        chance = ax.axvline(0.5, color="k", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1.08)
        ax.set_ylim(-0.6, len(bars) - 0.4)
        ax.set_title(dataset + (f" — {model}" if many_models else ""), fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("AUROC of −τ (adversarial = positive)")
    fig.suptitle("τ as a detector of adversarial inputs", fontsize=10)
    names = {t.record.defense_label: t.record.defense for t in items}
    order = sorted(seen, key=lambda lab: (lab in names, order_key(names.get(lab), DEFENSE_ORDER), lab))
    fig.legend([seen[k] for k in order] + [chance], order + ["chance (0.5)"], loc="outside lower center",
               ncol=min(4, len(seen) + 1), fontsize=7.5, frameon=False)
    return [_save(fig, fig_dir / "tau_auroc.png")]


def make_figures(records: list[Record], taus: list[TauStats], worst: list[WorstCase],
                 fig_dir: Path) -> tuple[list[Path], list[str]]:
    """Every figure, and notes for results.md (figures that span several pages)."""
    hists, notes = tau_histograms(records, fig_dir)
    return (worst_case_figures(records, worst, fig_dir) + accuracy_vs_eps(records, fig_dir) + hists
            + auroc_bars(taus, fig_dir)), notes
