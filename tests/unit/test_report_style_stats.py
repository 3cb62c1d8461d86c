"""Pure pieces of the report: one look per defense, Wilson intervals, LaTeX escaping."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from counterclip.report.latex import escape, latex_table
from counterclip.report.stats import wilson
from counterclip.report.style import KNOWN, defense_style
from counterclip.report.tables import Table


def test_known_defenses_have_distinct_fixed_looks():
    looks = {name: defense_style(name) for name in KNOWN}
    assert len({s.colour for s in looks.values()}) == len(KNOWN)
    assert len({s.marker for s in looks.values()}) == len(KNOWN)
    # none and rn often coincide (rn barely moves the numbers): they must differ in colour, marker and line
    none, rn = looks["none"], looks["rn"]
    assert none.colour != rn.colour and none.marker != rn.marker and none.linestyle != rn.linestyle


def test_plugin_defense_look_is_the_same_in_every_process():
    """A plugin name's look comes from a hash of its name; Python's str hash is salted per process, so the
    look must not come from hash()."""
    name = "my_pkg.defenses:Smooth"
    code = ("import json; from counterclip.report.style import defense_style; "
            f"s = defense_style({name!r}); print(json.dumps([s.colour, s.marker, str(s.linestyle)]))")
    seen = set()
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        seen.add(out.stdout.strip())
    s = defense_style(name)
    assert seen == {json.dumps([s.colour, s.marker, str(s.linestyle)])}
    assert s.colour not in {c for c, _, _ in KNOWN.values()}   # never mistaken for a known defense
    # a defense run with several settings keeps its colour and marker, the line style tells the runs apart
    v = defense_style("ttc", "ttc[tau_thres=0.1]")
    assert (v.colour, v.marker) == (KNOWN["ttc"][0], KNOWN["ttc"][1]) and v.linestyle != KNOWN["ttc"][2]


def test_wilson_hand_computed():
    # k = 0: the interval is [0, z^2 / (n + z^2)]; n = 10, z = 1.96 (1.959964): 3.841459 / 13.841459
    lo, hi = wilson(0.0, 10)
    assert lo == 0.0 and hi == pytest.approx(3.841459 / 13.841459, abs=1e-6)
    # k = n by symmetry
    lo, hi = wilson(1.0, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(10 / 13.841459, abs=1e-6)
    # 1 of 20, worked by hand: centre (0.05 + 3.841459 / 40) / 1.192073 = 0.122506, half-width 1.959964 *
    # sqrt(0.05 * 0.95 / 20 + 3.841459 / 1600) / 1.192073 = 0.113625
    lo, hi = wilson(1 / 20, 20)
    assert lo == pytest.approx(0.122506 - 0.113625, abs=2e-6) and hi == pytest.approx(0.122506 + 0.113625, abs=2e-6)
    assert all(math.isnan(v) for v in wilson(0.5, None)) and all(math.isnan(v) for v in wilson(float("nan"), 8))


@pytest.mark.parametrize("k,n", [(0, 7), (1, 20), (13, 32), (31, 32), (500, 1000), (256, 256)])
def test_wilson_matches_scipy(k, n):
    stats = pytest.importorskip("scipy.stats")
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson(k / n, n)
    assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)


def test_latex_escapes_specials_and_converts_markup():
    assert escape(r"a_b & 50% #1 {x} ~^ $ \ ") == (r"a\_b \& 50\% \#1 \{x\} \textasciitilde{}\textasciicircum{} "
                                                  r"\$ \textbackslash{} ")
    assert escape("**12.50** (5.0–28.1)") == r"\textbf{12.50} (5.0--28.1)"
    assert escape("ε = 1/255, τ ≤ 0.2 ¹") == r"$\varepsilon$ = 1/255, $\tau$ $\leq$ 0.2 \textsuperscript{1}"
    assert escape("a ** b") == "a ** b".replace("**", "")       # a lone ** opens no group that never closes


def test_latex_table_is_booktabs_with_grouped_defense_columns():
    t = Table("pgd, ε = 4/255 (oblivious)", ["dataset", "n", "my_def clean", "my_def robust"],
              [["cifar10", "20", "85.00 (64.0–94.8)", "10.00 (2.8–30.1)"], ["**average**", "1 dataset", "**85.00**",
                                                                           "**10.00**"]], notes="In %.")
    lines = latex_table(t, "tab:x")
    text = "\n".join(lines)
    assert [ln for ln in lines if ln in (r"\toprule", r"\bottomrule")] == [r"\toprule", r"\bottomrule"]
    assert lines.count(r"\midrule") == 2                     # under the header and above the average row
    assert r"\multicolumn{2}{c}{my\_def}" in text and r"\cmidrule(lr){3-4}" in text
    assert r"\begin{tabular}{lrrr}" in text and r"\caption{pgd, $\varepsilon$ = 4/255 (oblivious). In \%.}" in text
    assert r"\textbf{average} & 1 dataset & \textbf{85.00} & \textbf{10.00} \\" in text
