"""The report step on a synthetic eval directory: tables, worst case, sanity, tau AUROC, figures."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from counterclip.errors import CounterclipError
from counterclip.report import auroc, build_report, tau_auroc

N = 20
EPS = {"1/255": 1 / 255, "4/255": 4 / 255}
# (dataset, eps_str, defense) -> (clean correct count, robust correct count), out of N
COUNTS = {
    ("cifar10", "1/255", "none"): (17, 1), ("cifar10", "1/255", "ttc"): (16, 9),
    ("cifar10", "4/255", "none"): (17, 0), ("cifar10", "4/255", "ttc"): (15, 5),
    ("fashion-mnist", "1/255", "none"): (14, 2), ("fashion-mnist", "1/255", "ttc"): (13, 6),
    ("fashion-mnist", "4/255", "none"): (14, 0), ("fashion-mnist", "4/255", "ttc"): (12, 3),
    ("tinyimagenet", "1/255", "none"): (10, 0), ("tinyimagenet", "1/255", "ttc"): (9, 1),
    ("tinyimagenet", "4/255", "none"): (10, 0), ("tinyimagenet", "4/255", "ttc"): (8, 0),
}
# the per-sample pattern for fashion-mnist / 1/255 / ttc (oblivious PGD) and the adaptive attack on it
OBL = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], bool)      # 6 robust
ADA = np.array([0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], bool)      # 4 robust
WORST = (OBL & ADA).mean()                                                            # samples 1, 3 -> 2/20
CLEAN_TAU = np.array([0.3, 0.2, 0.2, 0.1], np.float32)
ADV_TAU = np.array([0.05, 0.2, 0.1, np.nan], np.float32)
# score = -tau, adversarial positive: pairs won 4 + (1 + 2 * 0.5) + (3 + 0.5) = 9.5 of 3 * 4
AUROC_SMALL = 9.5 / 12


def _pattern(k: int) -> np.ndarray:
    out = np.zeros(N, bool)
    out[:k] = True
    return out


def write_record(folder, stem, *, dataset, eps_str, defense, clean, robust, threat="oblivious", adaptive=None,
                 attack="pgd", clean_tau=None, adv_tau=None, index=None, sanity=None, sidecar=True):
    folder.mkdir(parents=True, exist_ok=True)
    n = len(clean)
    eps = EPS.get(eps_str, 0.0)
    rec = {
        "model": "tiny-fmnist", "pretrained": None, "dataset": dataset,
        "attack": {"name": attack, "eps": eps, "eps_str": eps_str, "steps": 10, "step_size": 1 / 255},
        "defense": {"name": defense, "params": {"tau_thres": 0.2} if defense == "ttc" else {}},
        "threat_model": threat,
        "metrics": {"clean_acc": float(clean.mean()), "robust_acc": float(robust.mean()), "n_samples": n,
                    "clean_acc_ci95": [0.0, 1.0], "robust_acc_ci95": [0.0, 1.0]},
        "sanity": sanity if sanity is not None else {"grad_nonzero": {"passed": True, "detail": "ok"}},
        "seed": 0, "time_s": 1.0, "versions": {},
    }
    if adaptive:
        rec["adaptive_attack"] = {"name": adaptive, "eot": 4}
    if sidecar:
        rec["sidecar"] = f"{stem}.npz"
        nan = np.full(n, np.nan, np.float32)
        np.savez(folder / f"{stem}.npz", index=np.arange(n, dtype=np.int64) if index is None else index,
                 label=np.zeros(n, np.int64), clean_correct=clean, robust_correct=robust,
                 clean_tau=nan if clean_tau is None else clean_tau, adv_tau=nan if adv_tau is None else adv_tau)
    (folder / f"{stem}.json").write_text(json.dumps(rec))
    return rec


@pytest.fixture()
def run_dir(tmp_path):
    root = tmp_path / "run"
    rng = np.random.default_rng(0)
    for (ds, eps, d), (kc, kr) in COUNTS.items():
        robust = OBL if (ds, eps, d) == ("fashion-mnist", "1/255", "ttc") else _pattern(kr)
        assert robust.sum() == kr
        taus = {}
        if d == "ttc":
            taus = {"clean_tau": rng.uniform(0.15, 0.5, N).astype(np.float32),
                    "adv_tau": rng.uniform(0.0, 0.3, N).astype(np.float32)}
        sanity = None
        if (ds, eps, d) == ("cifar10", "4/255", "ttc"):
            sanity = {"grad_nonzero": {"passed": True, "detail": "ok"},
                      "robust_le_clean": {"passed": False, "detail": "robust 0.33 > clean 0.30 on 3 samples"}}
        write_record(root / ds / eps.replace("/", "_"), f"pgd_{d}", dataset=ds, eps_str=eps, defense=d,
                     clean=_pattern(kc), robust=robust, sanity=sanity, **taus)
    # adaptive attack on TTC, sidecar stored in a shuffled sample order: the worst case must align by index
    perm = np.random.default_rng(1).permutation(N)
    write_record(root / "fashion-mnist" / "adaptive", "eot_ttc", dataset="fashion-mnist", eps_str="1/255",
                 defense="ttc", clean=_pattern(13)[perm], robust=ADA[perm], index=perm.astype(np.int64),
                 threat="adaptive", adaptive="eot-pgd")
    # an attack-free record: clean accuracy only
    write_record(root / "fashion-mnist" / "clean", "none_none", dataset="fashion-mnist", eps_str="0",
                 defense="none", attack="none", clean=_pattern(14), robust=_pattern(14))
    # things the report must ignore
    write_record(root / ".state" / "shard0", "partial", dataset="SHOULD-NOT-APPEAR", eps_str="1/255",
                 defense="none", clean=_pattern(3), robust=_pattern(1))
    (root / "config.json").write_text(json.dumps({"grid": {"datasets": ["cifar10"]}}))
    return root


def _section(md: str, title: str) -> list[str]:
    lines = md.splitlines()
    start = lines.index(title)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    return lines[start:end]


def _row(lines: list[str], first_cell: str) -> list[str]:
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in {lines}")


def pct(k):
    return f"{100 * k / N:.2f}"


def ci(k, n=N):
    """The Wilson interval text the tables print after an accuracy of k/n (checked against scipy elsewhere)."""
    from counterclip.report.stats import wilson

    lo, hi = wilson(k / n, n)
    return f" ({100 * lo:.1f}–{100 * hi:.1f})"


def test_auroc_hand_computed_with_ties():
    assert auroc(-ADV_TAU, -CLEAN_TAU) == pytest.approx(AUROC_SMALL)
    assert tau_auroc(CLEAN_TAU, ADV_TAU) == pytest.approx(AUROC_SMALL)
    assert auroc([1, 2], [1, 2]) == pytest.approx(0.5)              # all-tie style symmetry
    assert auroc([0.0], [1.0]) == 0.0 and auroc([1.0], [0.0]) == 1.0
    assert math.isnan(auroc([np.nan], [1.0]))


def test_tables_csv_worst_case_sanity_tau(run_dir, tmp_path):
    # add a tiny example whose tau AUROC is the hand-computed one (cifar10, cw)
    write_record(run_dir / "cifar10" / "cw", "cw_ttc", dataset="cifar10", eps_str="1/255", defense="ttc",
                 attack="cw", clean=np.ones(4, bool), robust=np.array([1, 0, 0, 1], bool),
                 clean_tau=CLEAN_TAU, adv_tau=ADV_TAU)
    written = build_report(run_dir)
    md = (run_dir / "results.md").read_text()
    assert "SHOULD-NOT-APPEAR" not in md

    # paper-style table: the average row excludes TinyImageNet
    table = _section(md, "#### pgd, ε = 1/255 (oblivious)")
    header = [c.strip() for c in table[2].strip("|").split("|")]
    avg = _row(table, "**average**")
    col = header.index("ttc robust")
    expected = (COUNTS[("cifar10", "1/255", "ttc")][1] + COUNTS[("fashion-mnist", "1/255", "ttc")][1]) / 2
    assert avg[col] == f"**{pct(expected)}**"
    assert avg[header.index("none clean")] == f"**{pct((17 + 14) / 2)}**"
    assert _row(table, "tinyimagenet ¹")[col] == pct(1) + ci(1)
    assert _row(table, "fashion-mnist")[header.index("ttc clean")] == pct(13) + ci(13)
    assert "excluding TinyImageNet" in "\n".join(table)
    assert "#### Clean accuracy (no attack)" in md

    # CSV: one row per record, fractions
    with open(written["results.csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(COUNTS) + 3
    (row,) = [r for r in rows if (r["dataset"], r["eps_str"], r["defense"], r["threat_model"], r["attack"])
              == ("fashion-mnist", "1/255", "ttc", "oblivious", "pgd")]
    assert float(row["robust_acc"]) == pytest.approx(6 / N) and int(row["n_samples"]) == N
    (ada,) = [r for r in rows if r["threat_model"] == "adaptive"]
    assert ada["adaptive_attack"] == "eot-pgd" and float(ada["robust_acc"]) == pytest.approx(4 / N)

    # oblivious vs adaptive: worst case = per-sample AND aligned by index (2/20, not min(6, 4)/20)
    sec = _section(md, "## Oblivious vs adaptive attacks, and the worst case")
    head = next(line for line in sec if line.startswith("| dataset"))
    header = [c.strip() for c in head.strip("|").split("|")]
    (line,) = [ln for ln in sec if ln.startswith("| fashion-mnist | 1/255 | ttc |")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[header.index("pgd (obl.)")] == pct(6)
    assert cells[header.index("eot-pgd (adaptive)")] == pct(4)
    assert cells[header.index("worst case")] == f"**{100 * WORST:.2f}**" + ci(2)
    with open(written["worst_case.csv"], newline="") as f:
        (wc,) = [r for r in csv.DictReader(f)
                 if (r["dataset"], r["eps_str"], r["defense"]) == ("fashion-mnist", "1/255", "ttc")]
    assert float(wc["worst_case_robust_acc"]) == pytest.approx(WORST) and wc["exact"] == "True"

    # the failed sanity check is listed with its record and detail
    sanity = "\n".join(_section(md, "## Sanity checks"))
    assert "1 of" in sanity and "FAILED" in sanity
    assert "robust_le_clean" in sanity and "robust 0.33 > clean 0.30" in sanity
    assert "cifar10/4_255/pgd_ttc.json" in sanity

    # tau: the hand-computed AUROC, and means of the finite values only
    tau = _section(md, "## Sensitivity τ: clean vs adversarial")
    (line,) = [ln for ln in tau if "| cifar10 | cw |" in ln]
    assert f"{AUROC_SMALL:.3f}" in line
    assert f"{np.nanmean(ADV_TAU):.4f}" in line and f"{CLEAN_TAU.mean():.4f}" in line
    with open(written["tau.csv"], newline="") as f:
        (t,) = [r for r in csv.DictReader(f) if r["attack"] == "cw"]
    assert float(t["auroc"]) == pytest.approx(AUROC_SMALL) and t["n_adv"] == "3"

    # figures: non-empty PNGs, linked from the markdown
    figs = [k for k in written if k.startswith("figures/")]
    assert "figures/tau_auroc.png" in figs
    assert any(k.startswith("figures/tau_hist_") for k in figs)
    assert any(k.startswith("figures/acc_vs_eps_") for k in figs)
    for k in figs:
        data = written[k].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
        assert f"]({k})" in md

    # a second run over the same directory ingests none of the report's own outputs
    again = build_report(run_dir)
    with open(again["results.csv"], newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)


def test_auroc_below_half_is_flagged(tmp_path):
    write_record(tmp_path / "r", "x", dataset="cifar10", eps_str="1/255", defense="ttc",
                 clean=np.ones(4, bool), robust=np.zeros(4, bool),
                 clean_tau=np.array([0.01, 0.02, 0.03, 0.04], np.float32),
                 adv_tau=np.array([0.5, 0.6, 0.7, 0.8], np.float32))
    md = (tmp_path / "rep" / "results.md")
    written = build_report(tmp_path / "r", tmp_path / "rep")
    assert written["results.md"] == md.resolve()
    text = md.read_text()
    assert "0.000 (< 0.5)" in text and "AUROC below 0.5" in text


def test_single_record_without_sidecar_and_nan_taus(tmp_path):
    one = tmp_path / "one"
    write_record(one, "rec", dataset="fashion-mnist", eps_str="1/255", defense="ttc",
                 clean=_pattern(15), robust=_pattern(5), sidecar=False)
    written = build_report(one)
    md = written["results.md"].read_text()
    assert pct(5) in md and "No record measured τ" in md and "no sidecar" in md
    assert any(k.startswith("figures/acc_vs_eps_") for k in written)

    nan_dir = tmp_path / "nan"
    write_record(nan_dir, "a", dataset="cifar10", eps_str="1/255", defense="ttc", clean=_pattern(15),
                 robust=_pattern(5))                                     # all-NaN taus
    write_record(nan_dir, "b", dataset="cifar10", eps_str="1/255", defense="ttc", attack="cw",
                 clean=_pattern(15), robust=_pattern(7), sidecar=False)
    written = build_report(nan_dir)
    assert not any(k.startswith("figures/tau_") for k in written)
    md = written["results.md"].read_text()
    assert f"≤ **{pct(5)}**" in md                                      # upper bound without per-sample data


def test_empty_directory_raises(tmp_path):
    with pytest.raises(CounterclipError, match="no result records"):
        build_report(tmp_path)
    write_record(tmp_path / ".state", "partial", dataset="cifar10", eps_str="1/255", defense="none",
                 clean=_pattern(3), robust=_pattern(1))
    with pytest.raises(CounterclipError, match="no result records"):
        build_report(tmp_path)
    with pytest.raises(CounterclipError, match="not a directory"):
        build_report(tmp_path / "missing")


def test_duplicate_records_and_unreadable_json_are_reported(tmp_path):
    root = tmp_path / "dup"
    write_record(root / "a", "x", dataset="cifar10", eps_str="1/255", defense="ttc", clean=_pattern(3),
                 robust=_pattern(1), sanity={"flag": False})
    write_record(root / "b", "x", dataset="cifar10", eps_str="1/255", defense="ttc", clean=_pattern(4),
                 robust=_pattern(2))
    (root / "broken.json").write_text("{oops")
    with pytest.warns(UserWarning, match="broken.json"):
        md = build_report(root)["results.md"].read_text()
    assert "the tables use b/x.json" in md and "skipped unreadable broken.json" in md
    # a re-run is not a second attack: the worst case is b/x.json's own robust accuracy
    assert f"| cifar10 | 1/255 | ttc | 10.00 | **10.00**{ci(2)} | 20 |" in md
    assert "| a/x.json | flag |" in md


def test_long_labels_make_short_distinct_figure_names(tmp_path):
    # a folder mixing configurations labels models with their settings; figure names built from such labels
    # once exceeded the file system's 255-byte limit ("File name too long")
    from counterclip.report.records import slug

    a = "tiny-fmnist [" + ", ".join(f"setting_{i}=value_{i}" for i in range(40)) + "]"
    b = a.replace("value_39", "value_x")
    assert len(slug(a)) <= 80 and len(slug(b)) <= 80 and slug(a) != slug(b)
    (tmp_path / f"acc_vs_eps_fashion-mnist_{slug(a)}_oblivious_{slug(b)}.png").write_bytes(b"")  # creatable
    assert slug("fashion-mnist") == "fashion-mnist"


def test_runs_that_differ_only_in_attack_knobs_share_one_worst_case(tmp_path):
    """A second run into the same folder with a stronger attack (--steps 100, --attack-arg eot-pgd.steps=...)
    is the same experiment: one table, the attack named by its differing knobs, the worst case over both. A
    setting that changes what the defense computes (the seed here) still keeps runs apart."""
    root = tmp_path / "run"
    weak = np.array([1] * 8 + [0] * 12, bool)              # samples 0-7 robust
    strong = np.array([0] * 4 + [1] * 8 + [0] * 8, bool)   # samples 4-11: as many, but others
    other = np.array([1, 0] * 4 + [0] * 12, bool)
    for stem, steps, robust, seed in (("w", 10, weak, 0), ("s", 100, strong, 0), ("o", 10, other, 1)):
        rec = write_record(root, stem, dataset="fashion-mnist", eps_str="4/255", defense="ttc",
                           clean=_pattern(12), robust=robust)
        rec["attack"]["steps"] = steps
        rec["settings"] = {"seed": seed, "steps": steps, "attack_args": {}, "ttc_steps": 2}
        (root / f"{stem}.json").write_text(json.dumps(rec))
    md = build_report(root)["results.md"].read_text()
    assert "come from 2 different configurations" in md and "[seed=0]" in md and "[seed=1]" in md
    assert "seed=0, steps" not in md and "attack_args=" not in md  # no run label names an attack knob
    section = "\n".join(_section(md, "## Oblivious vs adaptive attacks, and the worst case"))
    assert "| pgd[steps=100] (obl.) | pgd[steps=10] (obl.) | worst case |" in section, section
    row = next(line for line in section.splitlines() if "[seed=0]" in line and "| ttc |" in line)
    assert f"| {pct(8)} | {pct(8)} | **{pct(4)}**{ci(4)} |" in row, row  # per sample over both runs of seed 0
    row1 = next(line for line in section.splitlines() if "[seed=1]" in line and "| ttc |" in line)
    assert f"**{pct(4)}**" in row1  # seed 1 stands alone


def test_attack_labels_name_only_knobs_that_every_run_records(tmp_path):
    """A record written before a config field existed (no x_init) next to a newer one: only the knobs both
    carry tell them apart, and the heading names the attack once."""
    root = tmp_path / "run"
    for stem, draws, x_init in (("old", 4, None), ("new", 8, {"name": "pgd", "steps": 10, "step_size": 1 / 255,
                                                              "step_size_str": "1/255"})):
        rec = write_record(root, stem, dataset="fashion-mnist", eps_str="4/255", defense="ttc", clean=_pattern(12),
                           robust=_pattern(5 if stem == "old" else 4), threat="adaptive", adaptive="tau-aware",
                           attack="tau-aware")
        rec["adaptive_attack"] = {"name": "tau-aware", "eot_samples": draws, "steps": 10, "step_size": 1 / 255,
                                  "step_size_str": "1/255", **({"x_init": x_init} if x_init else {})}
        (root / f"{stem}.json").write_text(json.dumps(rec))
    md = build_report(root)["results.md"].read_text()
    assert "#### tau-aware[eot_samples=4], ε = 4/255 (adaptive)" in md
    assert "#### tau-aware[eot_samples=8], ε = 4/255 (adaptive)" in md
    assert "x_init" not in md.split("## Figures")[0]
