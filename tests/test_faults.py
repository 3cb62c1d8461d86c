"""Fault injection, done for real on the embedded model: damaged state and records, a full and a read-only disk
(a real tmpfs where this machine lets us mount one), preemption by real signals, concurrent writers, hostile
image folders. Each fault ends with the numbers of an undisturbed run or with one clear error, and a later
undisturbed re-run gives the undisturbed numbers. Timing only through generous timeouts."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from counterclip.evaluation.config import EvalConfig
from counterclip.evaluation.grid import GridRunner

BASE = dict(datasets=["fashion-mnist"], attacks=["pgd"], eps=["4/255"], steps=2, defenses=["none", "ttc"],
            limit=16, batch_size=8, seed=5, probe_size=4)


def run(out, **over):
    return GridRunner(EvalConfig(output=str(out), **{**BASE, **over}), log=lambda *a: None).run()


def numbers(out: Path) -> dict:
    """Every record's per-sample results, by record file name."""
    res = {}
    for p in sorted(Path(out).glob("fashion-mnist/*.npz")):
        with np.load(p) as z:
            res[p.name] = {k: z[k] for k in ("index", "clean_correct", "robust_correct", "adv_tau")}
        res[p.name]["metrics"] = json.loads(p.with_suffix(".json").read_text())["metrics"]
    return res


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys() and a
    for name in a:
        for k in ("index", "clean_correct", "robust_correct"):
            assert np.array_equal(a[name][k], b[name][k]), (name, k)
        assert np.allclose(a[name]["adv_tau"], b[name]["adv_tau"], atol=1e-5)
        assert a[name]["metrics"] == b[name]["metrics"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    run(out)
    return out, numbers(out)


def chunks(out: Path, kind: str) -> list[Path]:
    return sorted(p for p in (Path(out) / ".state").rglob("*.pt") if p.parent.name.startswith(kind))


# -- 1. state that checks itself -------------------------------------------------------------------------------

def test_damaged_state_and_records_are_recomputed_with_one_warning_each(reference, tmp_path):
    ref_out, ref = reference
    out = tmp_path / "run"
    shutil.copytree(ref_out, out)
    adv = chunks(out, "adv-")
    truncated, garbled = adv[0], adv[1]
    truncated.write_bytes(truncated.read_bytes()[:100])
    data = bytearray(garbled.read_bytes())
    data[len(data) // 3] ^= 0xFF
    garbled.write_bytes(bytes(data))
    foreign = chunks(out, "def-ttc")[0]  # a chunk from another cell, copied over this one
    shutil.copy(chunks(out, "def-none")[0], foreign)
    recs = sorted(out.glob("fashion-mnist/*.json"))
    edited = json.loads(recs[0].read_text())
    edited["metrics"]["robust_acc"] = 0.99  # valid JSON, wrong number
    recs[0].write_text(json.dumps(edited))
    side = recs[1].with_suffix(".npz")
    side.write_bytes(side.read_bytes()[:-10])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(out)
    msgs = [str(w.message) for w in caught]
    for path in (truncated, garbled, foreign, recs[0], recs[1]):
        assert sum(str(path) in m for m in msgs) == 1, (path, msgs)
    assert any("foreign" in m and str(foreign) in m for m in msgs)
    assert_same(ref, numbers(out))
    with warnings.catch_warnings(record=True) as caught:  # now whole again: a re-run trusts everything, silently
        warnings.simplefilter("always")
        run(out)
    assert not [w for w in caught if "recomputing" in str(w.message)]
    assert_same(ref, numbers(out))


def test_report_skips_a_damaged_record_naming_it(reference, tmp_path, capsys):
    from counterclip.cli import main

    out = tmp_path / "run"
    shutil.copytree(reference[0], out, ignore=shutil.ignore_patterns(".state"))
    recs = sorted(out.glob("fashion-mnist/*.json"))
    rec = json.loads(recs[0].read_text())
    rec["metrics"]["clean_acc"] = 1.0
    recs[0].write_text(json.dumps(rec))
    recs[1].with_suffix(".npz").write_bytes(b"garbage")
    with pytest.warns(UserWarning) as caught:
        assert main(["report", str(out)]) == 0
    msgs = [str(w.message) for w in caught]
    assert "Traceback" not in capsys.readouterr().err
    assert sum(f"skipped damaged record fashion-mnist/{recs[0].name}" in m for m in msgs) == 1
    assert sum(recs[1].with_suffix(".npz").name in m for m in msgs) == 1
    md = (out / "results.md").read_text()
    assert f"skipped damaged record fashion-mnist/{recs[0].name}" in md  # the table says a row is missing
