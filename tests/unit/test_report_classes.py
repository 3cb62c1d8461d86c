"""report --classes: each record restricted to a class group, recomputed from its sidecar (the seen/unseen split
of a fine-tuning run's zero-shot proxy), on the golden eval folder's real records."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

from counterclip.errors import CounterclipError
from counterclip.report import build_report, load_records
from counterclip.report.classes import add_class_groups, parse_class_groups
from counterclip.report.stats import worst_cases

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "v1"
GROUPS = {"seen": [0, 1, 2, 3, 4], "unseen": [5, 6, 7, 8, 9]}


def test_parse_class_groups():
    assert parse_class_groups(["seen=0-4", "odd=1,3, 5-5"]) == {"seen": [0, 1, 2, 3, 4], "odd": [1, 3, 5]}
    for bad in (["0-4"], ["seen="], ["seen=a-b"], ["=1"], ["x=1", "x=2"], ["neg=-1"]):
        with pytest.raises(CounterclipError, match="--classes"):
            parse_class_groups(bad)


def test_groups_are_the_sidecars_restricted_to_their_labels():
    records = load_records(GOLDEN)
    grouped = add_class_groups(records, GROUPS)
    assert len(grouped) == 3 * len(records)  # the golden 8 images hold both groups
    by_path = {}
    for g in grouped[len(records):]:
        by_path.setdefault(g.path, []).append(g)
    for r in records:
        side = r.sidecar()
        parts = by_path[r.path]
        assert [p.dataset for p in parts] == [f"{r.dataset} [seen]", f"{r.dataset} [unseen]"]
        assert sum(p.n_samples for p in parts) == r.n_samples
        for p, classes in zip(parts, GROUPS.values()):
            keep = np.isin(side.label, classes)
            assert p.n_samples == keep.sum()
            assert p.robust_acc == pytest.approx(side.robust_correct[keep].mean())
            assert p.clean_acc == pytest.approx(side.clean_correct[keep].mean())
            assert set(p.sidecar().label) <= set(classes)
            lo, hi = p.robust_ci
            assert lo <= p.robust_acc <= hi
    # the per-sample worst case of a group is the AND over its attacks on the group's samples only
    for w in worst_cases(grouped):
        if w.dataset.endswith("[seen]"):
            recs = [g for g in grouped if g.dataset == w.dataset and g.eps_key == round(w.eps, 8)
                    and g.defense_label == w.defense and g.attacked]
            ok = np.logical_and.reduce([g.sidecar().robust_correct for g in recs])
            assert w.robust_acc == pytest.approx(ok.mean())


def test_report_lists_groups_apart_and_keeps_them_out_of_the_average(tmp_path, monkeypatch):
    import counterclip.report as report

    monkeypatch.setattr(report, "_have_matplotlib", lambda: False)  # the tables are the point; figures cost minutes
    written = build_report(GOLDEN, tmp_path, class_groups=["seen=0-4", "unseen=5-9"])
    md = written["results.md"].read_text()
    assert "| fashion-mnist [seen] |" in md and "| fashion-mnist [unseen] |" in md
    assert "| **average** | 1 dataset |" in md  # the groups are subsets of the one dataset
    rows = list(csv.DictReader(written["results.csv"].open()))
    assert {r["dataset"] for r in rows} == {"fashion-mnist", "fashion-mnist [seen]", "fashion-mnist [unseen]"}
    plain = build_report(GOLDEN, tmp_path / "plain")
    assert "[seen]" not in plain["results.md"].read_text()


def test_records_of_one_model_with_several_towers_are_labelled_by_tower():
    from types import SimpleNamespace

    from counterclip.report.records import _assign_config_labels

    def rec(tower, sha):
        return SimpleNamespace(raw={"settings": {"model": "tiny-fmnist", "seed": 0, "vision_checkpoint": tower,
                                                 "vision_checkpoint_sha256": sha}}, config_label="", config_note="")

    recs = [rec(None, None), rec("tiny-fmnist-fare", "ab"), rec("/x/TeCoA.pth.tar", "cd")]
    _assign_config_labels(recs)
    assert [r.config_label for r in recs] == ["original tower", "tower tiny-fmnist-fare", "tower TeCoA.pth.tar"]
    # one name, two files (a retrained tower): the name alone would pool them, so the settings label them
    recs = [rec("TeCoA.pth.tar", "ab"), rec("TeCoA.pth.tar", "cd")]
    _assign_config_labels(recs)
    assert recs[0].config_label != recs[1].config_label
    assert not recs[0].config_label.startswith("tower")
