"""The report as a paper needs it: one look per defense in every figure, no tau panel dropped, booktabs LaTeX,
tables without matplotlib, short configuration labels. Synthetic records, no model: fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from counterclip.cli import main as cli_main
from counterclip.report import build_report
from counterclip.report.records import CONFIG_LABEL_MAX
from counterclip.report.style import defense_style

N = 16
PLUGIN = "my_pkg.defenses:Smooth"


def record(folder: Path, stem: str, *, defense: str, eps_str: str = "4/255", robust: int = 4, clean: int = 12,
           attack: str = "pgd", threat: str = "oblivious", adaptive: str | None = None, settings=None,
           tau: bool = True, dataset: str = "fashion-mnist", tau_seed: str | None = None) -> None:
    """One result record and its sidecar, as eval writes them (the fields the report reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    eps = float(eps_str.split("/")[0]) / 255
    rng = np.random.default_rng(zlib.crc32((tau_seed or f"{stem}/{defense}").encode()))
    rec = {"model": "tiny-fmnist", "pretrained": None, "dataset": dataset, "threat_model": threat,
           "attack": {"name": attack, "eps": eps, "eps_str": eps_str, "steps": 10},
           "defense": {"name": defense, "params": {"tau_thres": 0.2} if defense == "ttc" else {}},
           "metrics": {"clean_acc": clean / N, "robust_acc": robust / N, "n_samples": N}, "sidecar": f"{stem}.npz"}
    if adaptive:
        rec["adaptive_attack"] = {"name": adaptive}
    if settings is not None:
        rec["settings"] = settings
    nan = np.full(N, np.nan, np.float32)
    np.savez(folder / f"{stem}.npz", index=np.arange(N), label=np.zeros(N, np.int64),
             clean_correct=np.arange(N) < clean, robust_correct=np.arange(N) < robust,
             clean_tau=rng.uniform(0.1, 0.5, N).astype(np.float32) if tau else nan,
             adv_tau=rng.uniform(0.0, 0.3, N).astype(np.float32) if tau else nan)
    (folder / f"{stem}.json").write_text(json.dumps(rec))


@pytest.fixture()
def grid(tmp_path):
    """none and rn with identical numbers (rn must not hide none), TTC, and a plugin defense; two budgets, an
    oblivious and an adaptive attack."""
    root = tmp_path / "run"
    for d, rob in (("none", 2), ("rn", 2), ("ttc", 7), (PLUGIN, 5)):
        for e in ("1/255", "4/255"):
            record(root, f"pgd_{e[0]}_{d.replace(':', '_')}", defense=d, eps_str=e, robust=rob + (e == "1/255"))
            if d != "none":
                record(root, f"eot_{e[0]}_{d.replace(':', '_')}", defense=d, eps_str=e, robust=rob - 1,
                       threat="adaptive", adaptive="eot-pgd")
    return root


@pytest.fixture()
def no_figures(monkeypatch):
    """For tests about the tables only: figures are the slow part, and they are tested on their own."""
    import counterclip.report as report

    monkeypatch.setattr(report, "_have_matplotlib", lambda: False)


def _capture_figures(monkeypatch) -> list:
    from counterclip.report import figures

    saved = []
    real = figures._save

    def keep(fig, path):
        saved.append((Path(path).name, fig))
        return real(fig, path)

    monkeypatch.setattr(figures, "_save", keep)
    return saved


def _hex(c) -> str:
    from matplotlib.colors import to_hex

    return to_hex(c)


def test_each_defense_has_one_colour_and_marker_in_every_figure(grid, monkeypatch):
    pytest.importorskip("matplotlib")
    saved = _capture_figures(monkeypatch)
    written = build_report(grid)
    kinds = {name.split("_")[0] + "_" + name.split("_")[1] for name, _ in saved}
    assert {"worst_case", "acc_vs", "tau_hist", "tau_auroc.png"} <= kinds, kinds
    looks: dict[str, set] = {}
    for name, fig in saved:
        if name.startswith("tau_hist"):    # one panel per record, its title in the defense's colour
            for ax in fig.axes:
                defense = next(d for d in ("none", "rn", "ttc", PLUGIN) if ax.get_title().startswith(d + ": "))
                looks.setdefault(defense, set()).add(("colour", _hex(ax.title.get_color())))
            continue
        (legend,) = fig.legends
        for text, handle in zip(legend.get_texts(), legend.legend_handles):
            d = text.get_text()
            if d in ("same inputs, several defenses", "chance (0.5)"):
                continue
            if hasattr(handle, "get_marker"):                       # a line: colour and marker
                looks.setdefault(d, set()).update({("colour", _hex(handle.get_color())),
                                                   ("marker", handle.get_marker())})
            else:                                                   # a bar
                looks.setdefault(d, set()).add(("colour", _hex(handle.get_facecolor())))
    assert set(looks) == {"none", "rn", "ttc", PLUGIN}
    for d, seen in looks.items():
        st = defense_style(d)
        assert seen <= {("colour", _hex(st.colour)), ("marker", st.marker)}, (d, seen)
        assert ("colour", _hex(st.colour)) in seen
    # none and rn coincide here: both lines are drawn, with different markers and sizes so neither hides
    fig = dict(saved)["acc_vs_eps_fashion-mnist_pgd_oblivious.png"]
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines() if not ln.get_label().startswith("_")}
    none, rn = lines["none"], lines["rn"]
    assert list(none.get_ydata()) == list(rn.get_ydata())
    assert none.get_marker() != rn.get_marker() and none.get_markersize() > rn.get_markersize()
    assert "figures/worst_case_fashion-mnist.png" in written


def test_auroc_bars_are_labelled_and_one_input_set_is_one_bar(tmp_path, monkeypatch):
    """An oblivious attack's inputs are the same for every defense, and so is tau: one bar for them, named;
    the adaptive attacks (inputs made per defense) keep a bar each, in the defense's colour."""
    pytest.importorskip("matplotlib")
    root = tmp_path / "run"
    for d in ("none", "rn", "ttc"):
        record(root, f"pgd_{d}", defense=d, tau_seed="same inputs")
        if d != "none":
            record(root, f"eot_{d}", defense=d, threat="adaptive", adaptive="eot-pgd")
    saved = _capture_figures(monkeypatch)
    build_report(root)
    (ax,) = dict(saved)["tau_auroc.png"].axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["pgd 4/255 (obl.) · none, rn, ttc", "eot-pgd 4/255 (adaptive) · rn",
                      "eot-pgd 4/255 (adaptive) · ttc"]
    bars = ax.patches
    assert [_hex(b.get_facecolor()) for b in bars[1:]] == [_hex(defense_style(d).colour) for d in ("rn", "ttc")]


def test_no_tau_panel_is_dropped_past_24(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    root = tmp_path / "many"
    for i in range(1, 26):                              # 25 budgets x one defense = 25 tau panels
        record(root, f"r{i}", defense="ttc", eps_str=f"{i}/255", robust=3)
    saved = _capture_figures(monkeypatch)
    written = build_report(root)
    pages = sorted(name for name, _ in saved if name.startswith("tau_hist_"))
    assert pages == [f"tau_hist_fashion-mnist_p{p}of3.png" for p in (1, 2, 3)]
    titles = [ax.get_title() for name, fig in saved if name.startswith("tau_hist_") for ax in fig.axes]
    assert len(titles) == 25 and all(f"ε={i}/255 " in "\n".join(titles) for i in range(1, 26))
    md = written["results.md"].read_text()
    assert "25 panels on 3 pages" in md
    assert all(f"(figures/{p})" in md for p in pages)


@pytest.mark.filterwarnings("ignore:figures skipped")
def test_latex_format_writes_booktabs_tables_from_the_cli(grid, capsys, no_figures):
    out = grid.parent / "rep"
    assert cli_main(["report", str(grid), "--out", str(out), "--format", "latex"]) == 0
    tex = (out / "results.tex").read_text()
    n_tables = tex.count(r"\begin{table}")
    assert n_tables >= 4 and tex.count(r"\end{table}") == n_tables
    for rule in (r"\toprule", r"\bottomrule"):
        assert tex.count(rule) == n_tables
    assert tex.count(r"\midrule") >= n_tables
    assert r"my\_pkg.defenses:Smooth" in tex and "my_pkg" not in tex       # the plugin's _ escaped
    assert "%" not in tex.replace(r"\%", "").split("\n", 1)[1]               # only the first line is a comment
    assert "**" not in tex and "ε" not in tex and "–" not in tex
    assert (out / "results.md").is_file()
    assert str(out / "results.tex") in capsys.readouterr().out


def test_report_without_matplotlib_writes_the_tables_and_says_how_to_get_figures(grid):
    code = ("import sys; sys.modules['matplotlib'] = None; from counterclip.cli import main; "
            f"sys.exit(main(['report', {str(grid)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "default"})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    said = [ln for ln in proc.stderr.splitlines() if "counterclip[report]" in ln]
    assert len(said) == 1 and "pip install" in said[0], proc.stderr
    md = (grid / "results.md").read_text()
    assert "#### pgd, ε = 4/255 (oblivious)" in md and "worst case" in md
    assert not (grid / "figures").exists()


@pytest.mark.filterwarnings("ignore:figures skipped")
def test_labels_name_only_the_settings_that_differ(tmp_path, no_figures):
    base = {"model": "tiny-fmnist", "seed": 0, "limit": 16, "prompts": "clip", "precision": "fp32",
            "steps": 10, "counterclip_version": "0.1.0"}
    # a seed-only difference is short enough to be the label itself
    root = tmp_path / "seeds"
    record(root, "a", defense="ttc", settings=base)
    record(root, "b", defense="ttc", settings={**base, "seed": 1})
    md = build_report(root)["results.md"].read_text()
    assert "tiny-fmnist [seed=0]" in md and "tiny-fmnist [seed=1]" in md
    assert "limit=" not in md and "prompts=" not in md and "steps=" not in md     # equal or an attack knob

    # many differing settings: a short name in headings and rows, the settings listed once
    root = tmp_path / "many"
    other = {**base, "seed": 3, "limit": 2000, "prompts": "reference", "precision": "bf16",
             "counterclip_version": "0.2.0"}
    record(root, "a", defense="ttc", settings=base)
    record(root, "b", defense="ttc", settings=other)
    # a record from a command that keeps no settings (zeroshot) does not make every setting "differ"
    record(root, "z", defense="none", attack="none", eps_str="0", settings=None, tau=False)
    md = build_report(root)["results.md"].read_text()
    full = "counterclip_version=0.2.0, limit=2000, precision=bf16, prompts=reference, seed=3"
    assert md.count(full) == 1, md
    assert "tiny-fmnist [config A]" in md and "tiny-fmnist [config B]" in md
    assert "tiny-fmnist [settings unrecorded]" in md
    for line in md.splitlines():
        for label in (seg.split("]")[0] for seg in line.split("tiny-fmnist [")[1:]):
            assert len(label) <= CONFIG_LABEL_MAX, line
