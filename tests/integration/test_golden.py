"""A folder written by the code before the grid's renovation resumes with nothing recomputed, and its report is
unchanged (tests/golden/README.md): the promise that an interrupted or extended run keeps its work."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
ARGS = ["eval", "--model", "tiny-fmnist", "--dataset", "fashion-mnist", "--attack", "pgd,autoattack",
        "--eps", "4/255", "--steps", "2", "--aa-steps", "2", "--square-queries", "20",
        "--defense", "none,ttc,csr,golden_plugin:Blur", "--threat-model", "both", "--limit", "8",
        "--batch-size", "8", "--eot-samples", "2"]


def _hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def golden_copy(tmp_path, monkeypatch):
    out = tmp_path / "v1"
    shutil.copytree(GOLDEN / "v1", out)
    monkeypatch.syspath_prepend(str(GOLDEN))  # golden_plugin:Blur, as the folder was made
    yield out
    sys.modules.pop("golden_plugin", None)


def test_golden_folder_resumes_with_nothing_recomputed(golden_copy, capsys):
    from counterclip.cli import main

    before = _hashes(golden_copy)
    assert sum(k.endswith(".json") and "/" in k and not k.startswith(".state") for k in before) == 20
    main(ARGS + ["--output", str(golden_copy)])
    after = _hashes(golden_copy)
    added = sorted(set(after) - set(before))
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not added, f"recomputed or new files: {added[:5]}"
    assert not changed, f"rewritten files: {changed[:5]}"
    assert "20 records" in capsys.readouterr().out


def test_golden_folder_reports_the_same_tables(golden_copy, tmp_path):
    from counterclip.cli import main

    out = tmp_path / "report"
    main(["report", str(golden_copy), "--out", str(out)])
    for name in ("results.md", "results.csv", "worst_case.csv", "tau.csv"):
        want = (GOLDEN / "v1-report" / name).read_text()
        got = (out / name).read_text().replace(str(golden_copy), "v1")  # the folder's own path
        assert got == want, f"{name} differs from the golden report"
