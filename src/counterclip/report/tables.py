"""Markdown and CSV tables: paper-style accuracy tables, oblivious vs adaptive, sanity checks, tau statistics."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .records import ATTACK_ORDER, DEFENSE_ORDER, THREAT_ORDER, Record, is_class_group, is_excluded_from_average, order_key
from .stats import TauStats, WorstCase, cell_key, mean_or_nan, wilson

AVERAGE_NOTE = ("The average row is the mean over the datasets in the table, excluding TinyImageNet{marked} "
                "as the paper does: the robust finetuned baselines were trained on it")


def pct(x) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{100 * x:.2f}"


def num(x, digits=4) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = (lambda c: str(c).replace("|", "\\|").replace("\n", " "))
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return lines


def _defense_order(records) -> list[str]:
    labels = {r.defense_label: r.defense for r in records}
    return sorted(labels, key=lambda lab: (order_key(labels[lab], DEFENSE_ORDER), lab))


def _cells(records: list[Record]) -> dict[tuple, Record]:
    cells = {}
    for r in sorted(records, key=lambda r: r.path):     # duplicates: the last by path wins (noted elsewhere)
        cells[cell_key(r)] = r
    return cells


def _n_text(recs: list[Record]) -> str:
    ns = sorted({r.n_samples for r in recs if r.n_samples is not None})
    return "—" if not ns else str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"


@dataclass
class Table:
    """One table, rendered as markdown (results.md) or LaTeX (results.tex) from the same cells."""
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: str = ""
    section: str = ""              # the heading above it (a model's name when the run holds several)


def pct_ci(acc, n) -> str:
    """An accuracy in % with its 95 % Wilson interval: ``45.31 (33.8–57.3)``."""
    lo, hi = wilson(acc, n)
    text = pct(acc)
    return text if not math.isfinite(lo) else f"{text} ({100 * lo:.1f}–{100 * hi:.1f})"


def accuracy_table_data(records: list[Record]) -> list[Table]:
    """One table per (model, threat model, attack, eps): rows = datasets + average, columns = defense x acc."""
    tables: list[Table] = []
    cells = _cells(records)
    models = sorted({r.model_label for r in records})
    for model in models:
        mrecs = [r for r in records if r.model_label == model]
        groups = sorted({(r.threat_model, r.attack, r.attack_label, r.eps_key) for r in mrecs},
                        key=lambda g: (order_key(g[0], THREAT_ORDER), order_key(g[1], ATTACK_ORDER), g[2], g[3]))
        for threat, attack, label, eps in groups:
            grecs = [r for r in mrecs if (r.threat_model, r.attack_label, r.eps_key) == (threat, label, eps)]
            clean_only = attack == "none" or not eps > 0
            title = ("Clean accuracy (no attack)" if clean_only else
                     f"{label}, ε = {grecs[0].eps_str} ({threat}" +
                     (f", on top of {attack}" if threat == "adaptive" and attack not in ("none", grecs[0].attack_base)
                      else "") + ")")
            defenses = _defense_order(grecs)
            datasets = sorted({r.dataset for r in grecs}, key=lambda d: (is_excluded_from_average(d), d))
            header = ["dataset", "n"]
            for d in defenses:
                header += [f"{d} clean"] if clean_only else [f"{d} clean", f"{d} robust"]
            rows, per_col, caveats, invalid = [], {}, set(), False
            for ds in datasets:
                row_recs = [cells[k] for d in defenses
                            if (k := (model, threat, label, eps, ds, d)) in cells]
                caveat = data_caveat(row_recs)
                if caveat:
                    caveats.add(caveat)
                row = [ds + (" ¹" if is_excluded_from_average(ds) else "") + (" ³" if caveat else ""),
                       _n_text(row_recs)]
                for d in defenses:
                    r = cells.get((model, threat, label, eps, ds, d))
                    vals = [r.clean_acc if r else None] + ([] if clean_only else [r.robust_acc if r else None])
                    marked = bool(r and (r.raw or {}).get("invalid"))  # --on-invalid skip counted some wrong
                    invalid |= marked
                    for j, v in enumerate(vals):
                        row.append((pct_ci(v, r.n_samples) if r else pct(v)) + (" ⁴" if marked else ""))
                        if not is_excluded_from_average(ds) and not is_class_group(ds):
                            per_col.setdefault((d, j), []).append(v)
                rows.append(row)
            included = [ds for ds in datasets if not is_excluded_from_average(ds) and not is_class_group(ds)]
            avg = ["**average**", f"{len(included)} dataset{'s' if len(included) != 1 else ''}"]
            partial = False
            for d in defenses:
                for j in range(1 if clean_only else 2):
                    vals = per_col.get((d, j), [])
                    have = [v for v in vals if v is not None and math.isfinite(v)]
                    text = pct(mean_or_nan(have))
                    if have and len(have) < len(included):
                        text += f" ({len(have)}/{len(included)})²"
                        partial = True
                    avg.append(f"**{text}**" if have else text)
            if included:
                rows.append(avg)
            has_tiny = any(is_excluded_from_average(ds) for ds in datasets)
            notes = [f"Accuracies in %, 95 % Wilson interval in brackets. {'¹ ' if has_tiny else ''}"
                     f"{AVERAGE_NOTE.format(marked=' (marked ¹)' if has_tiny else '')}."]
            if any(is_class_group(ds) for ds in datasets):
                notes.append("Rows `DATASET [group]` are that dataset's test images of the group's classes "
                             "(report --classes), classified among all classes; they stay out of the average.")
            if partial:
                notes.append("² this defense lacks some datasets: its average covers only the k/N datasets shown "
                             "and is not comparable with the other columns.")
            if caveats:
                notes.append("³ not the paper's data for this dataset: " + "; ".join(sorted(caveats)) + ".")
            if invalid:
                notes.append("⁴ some outputs of this record failed their checks and were counted wrong "
                             "(--on-invalid skip): see its valid_outputs sanity check.")
            tables.append(Table(title, header, rows, " ".join(notes),
                                section=f"Model {model}" if len(models) > 1 else ""))
    return tables


def accuracy_tables(records: list[Record]) -> list[str]:
    lines: list[str] = []
    section = None
    for t in accuracy_table_data(records):
        if t.section and t.section != section:
            lines += [f"### {t.section}", ""]
        section = t.section
        lines += [f"#### {t.title}", ""] + _md_table(t.header, t.rows) + ["", t.notes, ""]
    return lines


def data_caveat(recs) -> str:
    """Why a row's data differs from the paper's (a mirror's different split, a partial copy), or ''."""
    out = []
    for r in recs:
        raw = r.raw or {}
        if raw.get("split_note"):
            out.append(f"{r.dataset} read from {raw.get('source', 'a mirror')}, split {raw.get('split')}, "
                       f"{raw.get('dataset_size')} samples ({raw['split_note']})")
        status = (raw.get("count_check") or {}).get("status", "")
        if status.startswith("partial"):
            cc = raw["count_check"]
            out.append(f"{r.dataset}: a partial copy ({cc.get('found')} of {cc.get('expected')} samples, "
                       "--allow-partial)")
    return "; ".join(dict.fromkeys(out))


def adaptive_table(worst: list[WorstCase], many_models: bool) -> tuple[list[str], list[list[str]]]:
    """Rows of the oblivious-vs-adaptive table: each attack's robust accuracy and the per-sample worst case."""
    cols = {}
    for w in worst:
        for r in w.records:
            cols[(r.threat_model, r.attack_label)] = r.attack
    col_keys = sorted(cols, key=lambda c: (order_key(c[0], THREAT_ORDER), order_key(cols[c], ATTACK_ORDER), c[1]))
    header = (["model"] if many_models else []) + ["dataset", "ε", "defense"]
    header += [f"{lab} ({'adaptive' if t == 'adaptive' else 'obl.'})" for t, lab in col_keys]
    header += ["worst case", "n", "cost: passes / image, img/s"]
    rows = []
    for w in worst:
        by_col = {(r.threat_model, r.attack_label): r for r in sorted(w.records, key=lambda r: r.path)}
        row = ([w.model] if many_models else []) + [w.dataset, w.eps_str, w.defense]
        row += [pct(by_col[c].robust_acc) if c in by_col else "—" for c in col_keys]
        lo, hi = wilson(w.robust_acc, w.n)
        ci = f" ({100 * lo:.1f}–{100 * hi:.1f})" if w.exact and math.isfinite(lo) else ""
        row += [("" if w.exact else "≤ ") + f"**{pct(w.robust_acc)}**{ci}", str(w.n), cost_cell(w.records)]
        rows.append(row)
    return header, rows


def cost_cell(records: list[Record]) -> str:
    """The defense's cost on the oblivious inputs (records written before costs were counted: "—"): image-encoder
    forwards (F) and backwards (B) per image, counted, and measured images/s."""
    recs = sorted(records, key=lambda r: r.threat_model != "oblivious")
    for r in recs:
        c = r.raw.get("cost") if isinstance(r.raw, dict) else None
        if isinstance(c, dict) and c.get("image_forwards_per_image") is not None:
            text = f"{c['image_forwards_per_image']:.3g} F + {c.get('image_backwards_per_image', 0):.3g} B"
            if c.get("text_forwards_per_image"):
                text += f" + {c['text_forwards_per_image']:.3g} text F"
            if c.get("images_per_s"):
                text += f", {c['images_per_s']:.3g} img/s"
            return text
    return "—"


def sanity_section(records: list[Record]) -> list[str]:
    failed, unknown, total, without = [], 0, 0, 0
    for r in records:
        if not r.sanity:
            without += 1
        for name, check in r.sanity.items():
            total += 1
            passed = check.get("passed") if isinstance(check, dict) else check
            detail = check.get("detail", "") if isinstance(check, dict) else ""
            if passed is False:
                failed.append([r.path, str(name), str(detail)])
            elif passed is not True:
                unknown += 1
    lines = ["## Sanity checks", ""]
    if failed:
        lines += [f"**{len(failed)} of {total} checks FAILED** — the numbers of these records are suspect:", ""]
        lines += _md_table(["record", "check", "detail"], failed) + [""]
    elif total:
        lines += [f"All {total} sanity checks passed.", ""]
    else:
        lines += ["No record carries sanity checks.", ""]
    if unknown:
        lines += [f"{unknown} check(s) report neither passed nor failed (not run or skipped).", ""]
    if without and total:
        lines += [f"{without} of {len(records)} record(s) carry no sanity checks.", ""]
    return lines


def draws_and_stages_section(records: list[Record]) -> list[str]:
    """Re-drawn evaluation of randomised defenses (``--eval-draws``) and AutoAttack's stages, where present."""
    lines = []
    drawn = [r for r in records if (r.raw.get("metrics") or {}).get("eval_draws", 1) > 1]
    if drawn:
        lines += ["## Randomised defenses: re-drawn evaluation", "",
                  "Each final input classified again on fresh draws of the defense's randomness the attacker never "
                  "saw. *robust* is the usual single draw; *all draws* counts a sample robust only if it is "
                  "correct on every draw.", ""]
        rows = []
        for r in drawn:
            m = r.raw["metrics"]
            per = m.get("robust_acc_draws") or []
            rows.append([r.dataset, r.attack_label, r.eps_str, r.defense_label, r.threat_model,
                         pct(r.robust_acc), f"{pct(min(per))}–{pct(max(per))}" if per else "—",
                         pct(m.get("robust_acc_all_draws")), str(m["eval_draws"])])
        lines += _md_table(["dataset", "attack", "ε", "defense", "threat", "robust (1 draw)", "per draw",
                            "all draws", "draws"], rows) + [""]
    staged = [r for r in records if isinstance(r.raw.get("autoattack"), dict)]
    if staged:
        lines += ["## AutoAttack stages", "", "Robust accuracy of the attacked model after each stage "
                  "(components run in order on the samples still robust).", ""]
        rows = []
        for r in staged:
            aa = r.raw["autoattack"]
            st = aa.get("robust_accuracy_dict") or {}
            rows.append([r.dataset, r.attack_label, r.eps_str, r.defense_label,
                         str(aa.get("version")), " → ".join(f"{k} {pct(v)}" for k, v in st.items()),
                         ", ".join(aa.get("dropped") or []) or "—"])
        lines += _md_table(["dataset", "attack", "ε", "defense", "version", "stages", "dropped"], rows) + [""]
    return lines


def tau_section(taus: list[TauStats]) -> list[str]:
    lines = ["## Sensitivity τ: clean vs adversarial", ""]
    if not taus:
        return lines + ["No record measured τ (all sidecar τ values are NaN or sidecars are missing).", ""]
    lines += ["τ's AUROC as a detector of adversarial inputs: adversarial = positive, score = −τ (lower τ = "
              "more suspicious); Mann-Whitney rank formula, ties count one half. 0.5 = chance. The *gated* "
              "columns give the share of inputs with τ < tau_thres, i.e. those TTC counterattacks.", ""]
    header = ["model", "dataset", "attack", "ε", "threat", "defense", "n clean", "mean τ clean", "n adv",
              "mean τ adv", "AUROC", "gated clean %", "gated adv %"]
    rows, below = [], []
    for t in taus:
        r = t.record
        flag = " (< 0.5)" if math.isfinite(t.auroc) and t.auroc < 0.5 else ""
        if flag:
            below.append(f"{r.dataset} / {r.attack_label} / {r.eps_str} / {r.defense_label}")
        rows.append([r.model_label, r.dataset, r.attack_label, r.eps_str, r.threat_model, r.defense_label,
                     str(t.n_clean), num(t.mean_clean), str(t.n_adv), num(t.mean_adv), num(t.auroc, 3) + flag,
                     pct(t.gated_clean), pct(t.gated_adv)])
    lines += _md_table(header, rows) + [""]
    if below:
        lines += ["**AUROC below 0.5** for " + "; ".join(below) + ": there τ ranks adversarial inputs as *less* "
                  "suspicious than clean ones (worse than chance; a τ-aware attacker can achieve this on "
                  "purpose), so TTC's τ gate does not single out these adversarial inputs.", ""]
    return lines


CSV_FIELDS = ["model", "pretrained", "dataset", "attack", "eps", "eps_str", "defense", "defense_label",
              "defense_params", "threat_model", "adaptive_attack", "clean_acc", "robust_acc", "n_samples",
              "clean_acc_ci95_lo", "clean_acc_ci95_hi", "robust_acc_ci95_lo", "robust_acc_ci95_hi", "record"]


def _csv_num(x):
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else repr(x)


def write_results_csv(records: list[Record], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for r in records:
            w.writerow([r.model, r.pretrained or "", r.dataset, r.attack, repr(r.eps), r.eps_str, r.defense,
                        r.defense_label, json.dumps(r.defense_params, sort_keys=True, default=str),
                        r.threat_model, r.adaptive_attack or "", _csv_num(r.clean_acc), _csv_num(r.robust_acc),
                        "" if r.n_samples is None else r.n_samples, *map(_csv_num, r.clean_ci),
                        *map(_csv_num, r.robust_ci), r.path])


def write_worst_case_csv(worst: list[WorstCase], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "dataset", "eps", "eps_str", "defense", "attacks", "worst_case_robust_acc", "n",
                    "worst_case_ci95_lo", "worst_case_ci95_hi", "exact", "notes"])
        for c in worst:
            w.writerow([c.model, c.dataset, repr(c.eps), c.eps_str, c.defense,
                        ";".join(f"{r.threat_model}:{r.attack_label}" for r in c.records),
                        _csv_num(c.robust_acc), c.n, *map(_csv_num, wilson(c.robust_acc, c.n) if c.exact
                                                          else (float("nan"), float("nan"))),
                        c.exact, " | ".join(c.notes)])


def write_tau_csv(taus: list[TauStats], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "dataset", "attack", "eps", "eps_str", "threat_model", "defense", "n_clean",
                    "mean_clean_tau", "n_adv", "mean_adv_tau", "auroc", "tau_thres", "gated_clean", "gated_adv",
                    "record"])
        for t in taus:
            r = t.record
            w.writerow([r.model_label, r.dataset, r.attack_label, repr(r.eps), r.eps_str, r.threat_model,
                        r.defense_label, t.n_clean, _csv_num(t.mean_clean), t.n_adv, _csv_num(t.mean_adv),
                        _csv_num(t.auroc), _csv_num(t.tau_thres), _csv_num(t.gated_clean),
                        _csv_num(t.gated_adv), r.path])
