"""Misbehaving defenses, attacks and gates in the grid: each fails its cell in one line (the other cells go on,
no record is written for it), or with on_invalid="skip" gets a record that counts its invalid samples wrong and
marks them."""

import json
import textwrap

import pytest

import counterclip
from counterclip.evaluation.sampling import select_indices
from counterclip.evaluation.validate import FailedCells

BAD = '''
import torch

from counterclip.attacks import Attack
from counterclip.defenses import Defense


class NaNLogits(Defense):
    """NaN logits for every other image (the issue's first example)."""

    name = "nan-logits"

    def predict(self, classifier, x, generator=None):
        logits = classifier(x)
        logits[::2] = float("nan")
        return logits


class InfLogits(Defense):
    name = "inf-logits"

    def predict(self, classifier, x, generator=None):
        logits = classifier(x)
        logits[1:3, 0] = float("inf")
        return logits


class ExtraLogit(Defense):
    """One logit too many: shape (B, C + 1)."""

    name = "extra-logit"

    def predict(self, classifier, x, generator=None):
        logits = classifier(x)
        return torch.cat([logits, logits[:, :1]], 1)


class WrongGate(Defense):
    """A gate whose score has shape (B, 1) instead of (B,)."""

    name = "wrong-gate"
    gate_threshold = 0.5

    def predict(self, classifier, x, generator=None):
        return classifier(x)

    def gate_score(self, classifier, x, generator=None):
        return torch.ones(len(x), 1)


class LeavesBall(Attack):
    """Steps twice its budget (and never projects)."""

    name = "leaves-ball"

    def __call__(self, classifier, x, y, generator=None):
        return (x + 2 * self.eps).clamp(0, 1)


class LeavesBox(Attack):
    """Stays in its budget but below 0."""

    name = "leaves-box"

    def __call__(self, classifier, x, y, generator=None):
        return x - self.eps
'''

LIMIT = 8


@pytest.fixture
def bad(tmp_path, monkeypatch):
    (tmp_path / "bad_outputs.py").write_text(textwrap.dedent(BAD))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import importlib

    import bad_outputs

    return importlib.reload(bad_outputs)


def _index(position):
    """The dataset index of the run's ``position``-th sample (the grid picks LIMIT samples with the seed)."""
    return int(select_indices(10000, LIMIT, 0)[position])


def _run(out, **kw):
    kw = {"attacks": ("none",), "limit": LIMIT, "batch_size": LIMIT, "probe_size": 4, "steps": 1, **kw}
    return counterclip.evaluate(out, **kw)


def _records(out):
    return [json.loads(p.read_text()) for p in sorted((out / "fashion-mnist").glob("*.json"))]


@pytest.mark.parametrize("cls, check, count, first", [("NaNLogits", "finite logits", 4, 0),
                                                      ("InfLogits", "finite logits", 2, 1),
                                                      ("ExtraLogit", "logits shape", LIMIT, 0)])
def test_bad_logits_fail_the_cell_in_one_line_and_the_others_go_on(bad, tmp_path, cls, check, count, first):
    logs = []
    with pytest.raises(FailedCells) as info:
        _run(tmp_path / "run", defenses=("none", getattr(bad, cls)()), log=logs.append)
    (line,) = info.value.failures
    assert "\n" not in line and f"defense bad_outputs:{cls}" in line and f"the {check} check" in line
    assert f"on {count} of {LIMIT} samples" in line and f"(first: dataset index {_index(first)})" in line
    assert [r["defense"]["name"] for r in _records(tmp_path / "run")] == ["none"]  # no record for the bad one
    assert any(str(s).startswith("FAILED: ") and cls in str(s) for s in logs)
    assert any("1 cell(s) FAILED" in str(s) for s in logs)  # the run's summary lists it


def test_the_cli_prints_one_line_and_exits_3(bad, tmp_path, capsys):
    from counterclip.cli import main

    rc = main(["eval", "--dataset", "fashion-mnist", "--limit", str(LIMIT), "--batch-size", str(LIMIT),
               "--defense", "none,bad_outputs:NaNLogits", "--output", str(tmp_path / "cli")])
    out, err = capsys.readouterr()
    assert rc == 3 and "Traceback" not in out + err
    failed = [ln for ln in out.splitlines() if "bad_outputs:NaNLogits failed the finite logits check" in ln]
    assert len(failed) == 2  # when it happens, and in the summary
    assert [r["defense"]["name"] for r in _records(tmp_path / "cli")] == ["none"]


def test_skip_records_the_cell_with_invalid_samples_counted_wrong_and_marked(bad, tmp_path):
    out = tmp_path / "skip"
    recs = {r["defense"]["name"]: r for r in _run(out, defenses=("none", bad.NaNLogits()), on_invalid="skip")}
    rec = recs["bad_outputs:NaNLogits"]
    assert rec["invalid"] == 4 and rec["sanity"]["valid_outputs"]["passed"] is False
    assert "finite logits on 4" in rec["sanity"]["valid_outputs"]["detail"]
    # the 4 NaN images count wrong: at most the 4 others are right, and they agree with the undefended model
    import numpy as np

    side = np.load(out / "fashion-mnist" / rec["sidecar"])
    plain = np.load(out / "fashion-mnist" / recs["none"]["sidecar"])
    assert not side["clean_correct"][::2].any()
    assert (side["clean_correct"][1::2] == plain["clean_correct"][1::2]).all()
    # NaNs differ from NaNs, but they are not randomness
    assert rec["sanity"]["randomized"]["fired"] is False and "not finite" in rec["sanity"]["randomized"]["detail"]
    assert recs["none"]["invalid"] == 0 and recs["none"]["sanity"]["valid_outputs"]["passed"] is True
    # the report marks it
    from counterclip.report import build_report

    build_report(str(out))
    md = (out / "results.md").read_text()
    assert "FAILED" in md and "valid_outputs" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| fashion-mnist"))
    assert row.count("⁴") == 1 and "⁴ some outputs of this record failed their checks" in md


def test_a_skipped_chunk_is_never_reused_as_valid(bad, tmp_path):
    out = tmp_path / "cache"
    _run(out, defenses=(bad.ExtraLogit(),), on_invalid="skip")
    with pytest.raises(FailedCells) as info:  # fail mode: neither the marked record nor its chunk is reused
        _run(out, defenses=(bad.ExtraLogit(),))
    assert "logits shape check on 8 of 8 samples" in info.value.failures[0]
    (rec,) = _run(out, defenses=(bad.ExtraLogit(),), on_invalid="skip")  # skip mode reuses its own record
    assert rec["invalid"] == LIMIT and rec["metrics"]["clean_acc"] == 0.0


def test_a_gate_score_of_the_wrong_shape_fails_in_one_line(bad, tmp_path):
    with pytest.raises(FailedCells) as info:
        _run(tmp_path / "gate", defenses=(bad.WrongGate(),))
    assert "the gate of defense bad_outputs:WrongGate failed the gate score shape check on 8 of 8" in \
        info.value.failures[0]
    (rec,) = _run(tmp_path / "gate", defenses=(bad.WrongGate(),), on_invalid="skip")
    assert rec["invalid"] == LIMIT and rec["sanity"]["valid_outputs"]["passed"] is False


@pytest.mark.parametrize("cls, check", [("LeavesBall", "eps-ball"), ("LeavesBox", "[0,1] box")])
def test_an_attack_that_leaves_the_ball_or_the_box(bad, tmp_path, cls, check):
    with pytest.raises(FailedCells) as info:
        _run(tmp_path / "atk", attacks=("none", getattr(bad, cls)), eps=("4/255",), defenses=("none",))
    (line,) = info.value.failures
    assert f"attack bad_outputs:{cls} failed the {check} check" in line and "\n" not in line
    recs = _run(tmp_path / "atk", attacks=(getattr(bad, cls),), eps=("4/255",), defenses=("none",),
                on_invalid="skip")
    (rec,) = recs
    assert rec["invalid"] > 0 and rec["sanity"]["valid_outputs"]["passed"] is False
    assert f"attack: {check}" in rec["sanity"]["valid_outputs"]["detail"]
    assert rec["metrics"]["robust_acc"] <= 1 - rec["invalid"] / LIMIT
