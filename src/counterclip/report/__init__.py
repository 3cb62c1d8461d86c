"""The report step: merge an eval directory's result records into tables (markdown, CSV) and figures.

``build_report(run_dir, out_dir=None)`` reads every ``run_dir/**/*.json`` result record (those with a
``"metrics"`` key; ``.state/`` folders and report outputs are skipped) and its ``.npz`` sidecar, and writes
into ``out_dir`` (default ``run_dir``):

- ``results.md``: one paper-style table per (attack, eps, threat model) with datasets as rows plus an average
  row (TinyImageNet excluded, as in the paper) and defense x {clean, robust} as columns, each accuracy with its
  95 % Wilson interval; an oblivious vs adaptive table with the per-sample worst case over all attacks; failed
  sanity checks; tau statistics with tau's AUROC as a detector of adversarial inputs; links to the figures.
  Records made with different run settings are kept apart under short labels, their settings listed once.
- ``results.csv`` (one row per record, fractions), ``worst_case.csv``, ``tau.csv``; with ``formats``
  containing "latex", ``results.tex`` (the same tables, booktabs).
- ``figures/*.png``: the worst case over every attack vs eps, accuracy vs eps per attack (Wilson bands), tau
  histograms (in pages, none dropped), tau AUROC bars; each defense has one colour and marker throughout.

matplotlib is imported only when the figures are drawn; without it the tables are still written.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from .classes import add_class_groups, parse_class_groups
from .records import Record, load_records, sort_records
from .stats import auroc, find_duplicates, tau_auroc, tau_stats, worst_case, worst_cases
from ..errors import UnknownNameError
from .latex import latex_document
from .tables import (Table, accuracy_table_data, accuracy_tables, adaptive_table, draws_and_stages_section,
                     sanity_section, tau_section, write_results_csv, write_tau_csv, write_worst_case_csv, _md_table)

__all__ = ["build_report", "load_records", "auroc", "tau_auroc", "worst_case", "Record"]

FIG_DIR = "figures"
NO_FIGURES = "figures skipped: matplotlib is not installed; get them with: pip install 'counterclip[report]'"


class FiguresSkipped(UserWarning):
    """The tables were written, the figures were not (matplotlib, an optional extra, is missing)."""


def _have_matplotlib() -> bool:
    # import, not find_spec: an installed but broken matplotlib must skip the figures too, not crash the report
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _header(run_dir: Path, records: list[Record]) -> list[str]:
    models = sorted({r.model_label for r in records})
    datasets = sorted({r.dataset for r in records})
    seeds = sorted({str(r.raw.get("seed")) for r in records if r.raw.get("seed") is not None})
    time_s = sum(t for r in records if isinstance(t := r.raw.get("time_s"), (int, float)) and math.isfinite(t))
    lines = ["# counterclip results", "",
             f"Run directory `{run_dir}`: {len(records)} result records; model(s) {', '.join(models)}; "
             f"datasets {', '.join(datasets)}" + (f"; seed(s) {', '.join(seeds)}" if seeds else "")
             + (f"; {time_s:.1f} s of evaluation" if time_s else "") + ".", ""]
    configs = {r.config_label: r.config_note for r in records}
    if len(configs) > 1:
        lines += [f"**These records come from {len(configs)} different configurations** (run settings differ); no "
                  "table pools them: each is labelled after the model name (`model [label]`) and gets its own "
                  "tables, rows and worst cases. Labels name only the settings that differ:", ""]
        lines += [f"- `{label}`" + (f": {note}" if note else "") if label
                  else "- (no label): the records whose recorded settings all agree"
                  for label, note in sorted(configs.items())]
        lines.append("")
    return lines


def _worst_case_section(records: list[Record]) -> tuple[list[str], list, list[Table]]:
    worst = worst_cases(records)
    lines = ["## Oblivious vs adaptive attacks, and the worst case", ""]
    if not worst:
        return lines + ["No attacked records.", ""], worst, []
    if not any(r.threat_model == "adaptive" for r in records):
        lines += ["No adaptive (defense-aware) attack was run: every robust accuracy below is against attacks "
                  "on the undefended model only, which overstates a test-time defense's robustness.", ""]
    lines += ["Robust accuracy (%) per attack; *worst case* = per-sample worst case over every attack in the row "
              "(oblivious and adaptive, same dataset and ε): a sample counts as robust only if it is correct "
              "under every attack (AND of the sidecars' `robust_correct`, aligned by sample `index`). "
              "`≤` marks an upper bound (min over attacks) where per-sample data is missing; the worst case's "
              "95 % Wilson interval in brackets.", ""]
    header, rows = adaptive_table(worst, many_models=len({w.model for w in worst}) > 1)
    lines += _md_table(header, rows) + [""]
    notes = [f"- {w.dataset} / {w.eps_str} / {w.defense}: {n}" for w in worst for n in w.notes]
    if notes:
        lines += ["Notes:", ""] + notes + [""]
    table = Table("Robust accuracy (%) per attack and the per-sample worst case over every attack", header, rows,
                  "A sample counts as robust only if every attack leaves it correct; ≤: an upper bound (no "
                  "per-sample data); worst case with its 95 % Wilson interval.")
    return lines, worst, [table]


FORMATS = ("markdown", "latex")


def build_report(run_dir, out_dir=None, formats=("markdown",), class_groups=None) -> dict[str, Path]:
    """Write the report for the eval directory ``run_dir`` into ``out_dir`` (default ``run_dir``).

    ``formats``: results.md and the CSVs are always written; "latex" adds results.tex (booktabs tables).
    ``class_groups``: ``{"seen": [0, 1, 2, 3, 4], ...}`` (or the CLI's ``["seen=0-4", ...]``) adds each record
    restricted to each group's test images, reported as the dataset ``DATASET [group]`` (``classes.py``).

    Returns ``{path relative to out_dir: absolute Path}`` for every file written. Raises
    ``counterclip.errors.CounterclipError`` when ``run_dir`` holds no result record.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UnknownNameError("report format", unknown[0], FORMATS)
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    problems: list[str] = []
    if class_groups is not None and not isinstance(class_groups, dict):
        class_groups = parse_class_groups(class_groups)
    records = load_records(run_dir, skip_under=[out_dir / FIG_DIR], problems=problems)
    records = sort_records(add_class_groups(records, class_groups or {}, problems))
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
    worst_lines, worst, worst_tables = _worst_case_section(records)

    figures: list[Path] = []
    fig_notes: list[str] = []
    if _have_matplotlib():
        from .figures import make_figures

        figures, fig_notes = make_figures(records, taus, worst, out_dir / FIG_DIR)
    else:
        warnings.warn(NO_FIGURES, FiguresSkipped, stacklevel=2)
        problems.append(NO_FIGURES)
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
        lines += ["## Figures", "", "Each defense has one colour and marker in every figure; shaded bands are 95 % "
                  "Wilson intervals.", ""]
        for f in figures:
            rel = f.relative_to(out_dir).as_posix()
            lines.append(f"- [{f.stem}]({rel})")
        lines += [""] + [f"Note: {n}." for n in fig_notes] + ([""] if fig_notes else [])
    if problems:
        lines += ["## Report notes", ""] + [f"- {p}" for p in problems] + [""]

    out("results.md").write_text("\n".join(lines))
    if "latex" in formats:
        out("results.tex").write_text(latex_document(accuracy_table_data(records) + worst_tables))
    write_results_csv(records, out("results.csv"))
    write_worst_case_csv(worst, out("worst_case.csv"))
    if taus:
        write_tau_csv(taus, out("tau.csv"))
    return written
