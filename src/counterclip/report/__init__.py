"""The report step: merge an eval directory's result records into tables (markdown, CSV) and figures.

``build_report(run_dir, out_dir=None)`` reads every ``run_dir/**/*.json`` result record (those with a
``"metrics"`` key; ``.state/`` folders and report outputs are skipped) and its ``.npz`` sidecar, and writes
into ``out_dir`` (default ``run_dir``):

- ``results.md``: one paper-style table per (attack, eps, threat model) with datasets as rows plus an average
  row (TinyImageNet excluded, as in the paper) and defense x {clean, robust} as columns; an oblivious vs
  adaptive table with the per-sample worst case over all attacks; failed sanity checks; tau statistics with
  tau's AUROC as a detector of adversarial inputs; links to the figures.
- ``results.csv`` (one row per record, fractions), ``worst_case.csv``, ``tau.csv``.
- ``figures/*.png``: tau histograms per dataset, accuracy vs eps per dataset and attack, tau AUROC bars.

matplotlib is imported only when the figures are drawn; without it the tables are still written.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

from .records import Record, load_records, sort_records
from .stats import auroc, find_duplicates, tau_auroc, tau_stats, worst_case, worst_cases
from .tables import (accuracy_tables, adaptive_table, draws_and_stages_section, sanity_section, tau_section,
                     write_results_csv, write_tau_csv, write_worst_case_csv, _md_table)

__all__ = ["build_report", "load_records", "auroc", "tau_auroc", "worst_case", "Record"]

FIG_DIR = "figures"


def _header(run_dir: Path, records: list[Record]) -> list[str]:
    models = sorted({r.model_label for r in records})
    datasets = sorted({r.dataset for r in records})
    seeds = sorted({str(r.raw.get("seed")) for r in records if r.raw.get("seed") is not None})
    time_s = sum(t for r in records if isinstance(t := r.raw.get("time_s"), (int, float)) and math.isfinite(t))
    lines = ["# counterclip results", "",
             f"Run directory `{run_dir}`: {len(records)} result records; model(s) {', '.join(models)}; "
             f"datasets {', '.join(datasets)}" + (f"; seed(s) {', '.join(seeds)}" if seeds else "")
             + (f"; {time_s:.1f} s of evaluation" if time_s else "") + ".", ""]
    configs = sorted({r.config_label for r in records if r.config_label})
    if configs:
        lines += [f"**These records come from {len(configs)} different configurations** (run settings differ): "
                  + "; ".join(f"`{c}`" for c in configs) + ". No table pools them: each configuration is labelled "
                  "after the model name and gets its own tables, rows and worst cases.", ""]
    return lines


def _worst_case_section(records: list[Record]) -> tuple[list[str], list]:
    worst = worst_cases(records)
    lines = ["## Oblivious vs adaptive attacks, and the worst case", ""]
    if not worst:
        return lines + ["No attacked records.", ""], worst
    if not any(r.threat_model == "adaptive" for r in records):
        lines += ["No adaptive (defense-aware) attack was run: every robust accuracy below is against attacks "
                  "on the undefended model only, which overstates a test-time defense's robustness.", ""]
    lines += ["Robust accuracy (%) per attack; *worst case* = per-sample worst case over every attack in the row "
              "(oblivious and adaptive, same dataset and ε): a sample counts as robust only if it is correct "
              "under every attack (AND of the sidecars' `robust_correct`, aligned by sample `index`). "
              "`≤` marks an upper bound (min over attacks) where per-sample data is missing.", ""]
    header, rows = adaptive_table(worst, many_models=len({w.model for w in worst}) > 1)
    lines += _md_table(header, rows) + [""]
    notes = [f"- {w.dataset} / {w.eps_str} / {w.defense}: {n}" for w in worst for n in w.notes]
    if notes:
        lines += ["Notes:", ""] + notes + [""]
    return lines, worst


def build_report(run_dir, out_dir=None) -> dict[str, Path]:
    """Write the report for the eval directory ``run_dir`` into ``out_dir`` (default ``run_dir``).

    Returns ``{path relative to out_dir: absolute Path}`` for every file written. Raises
    ``counterclip.errors.CounterclipError`` when ``run_dir`` holds no result record.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    problems: list[str] = []
    records = sort_records(load_records(run_dir, skip_under=[out_dir / FIG_DIR], problems=problems))
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def out(name: str) -> Path:
        path = out_dir / name
        written[name] = path.resolve()
        return path

    for key, dups in find_duplicates(records):
        problems.append("several records fill the same cell (" + ", ".join(r.path for r in dups)
                        + f"); the tables use {sorted(r.path for r in dups)[-1]}")
    taus = tau_stats(records)
    worst_lines, worst = _worst_case_section(records)

    figures: list[Path] = []
    if importlib.util.find_spec("matplotlib") is not None:
        from .figures import make_figures

        figures = make_figures(records, taus, out_dir / FIG_DIR)
    else:
        msg = "figures skipped: matplotlib is not installed; pip install 'counterclip[report]'"
        warnings.warn(msg, stacklevel=2)
        problems.append(msg)
    for f in figures:
        written[f.relative_to(out_dir).as_posix()] = f.resolve()

    for r in records:
        r.sidecar()
    no_sidecar = [f"{r.path}: {r.sidecar_problem}" for r in records if r.sidecar_problem]
    if no_sidecar:
        problems.append("per-sample data unavailable for " + str(len(no_sidecar)) + " record(s): "
                        + "; ".join(no_sidecar))

    lines = _header(run_dir, records)
    lines += ["## Accuracy", ""] + accuracy_tables(records)
    lines += worst_lines + draws_and_stages_section(records) + sanity_section(records) + tau_section(taus)
    if figures:
        lines += ["## Figures", ""]
        for f in figures:
            rel = f.relative_to(out_dir).as_posix()
            lines.append(f"- [{f.stem}]({rel})")
        lines.append("")
    if problems:
        lines += ["## Report notes", ""] + [f"- {p}" for p in problems] + [""]

    out("results.md").write_text("\n".join(lines))
    write_results_csv(records, out("results.csv"))
    write_worst_case_csv(worst, out("worst_case.csv"))
    if taus:
        write_tau_csv(taus, out("tau.csv"))
    return written
