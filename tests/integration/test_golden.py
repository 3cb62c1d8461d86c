"""A folder written by the code before the grid's renovation resumes with nothing recomputed, and its report is
unchanged (tests/golden/README.md): the promise that an interrupted or extended run keeps its work."""

from __future__ import annotations

import csv
import hashlib
import io
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


def _csv_rows(text: str) -> list:
    """Rows as column->value maps; a ';'-joined list (the attacks a worst case covers) as a set."""
    norm = lambda v: ";".join(sorted(v.split(";"))) if ";" in v else v  # noqa: E731
    return sorted(sorted((k, norm(v)) for k, v in row.items()) for row in csv.DictReader(io.StringIO(text)))


def _md_sections(text: str) -> dict:
    """Heading -> (its prose, its table rows as column->value maps): the same tables whatever the order of the
    sections and columns (which follows the registries: the import lines of attacks/ and defenses/)."""
    out, heading, prose, rows, header = {}, "", [], [], None
    for line in text.splitlines() + ["#### end"]:
        if line.startswith("#"):
            out[heading] = (sorted(prose), sorted(rows))
            heading, prose, rows, header = line, [], [], None
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if header is None:
                header = cells
            elif not set("".join(cells)) <= set("-:"):
                rows.append(sorted(zip(header, cells)))
        else:
            header = None if not line.strip() else header
            prose += line.replace(";", " ").replace(":", " ").split()  # lists of cells follow the registries' order
    return out


def test_golden_folder_reports_the_same_tables(golden_copy, tmp_path):
    from counterclip.cli import main

    out = tmp_path / "report"
    main(["report", str(golden_copy), "--out", str(out)])
    for name in ("results.csv", "worst_case.csv", "tau.csv"):
        assert _csv_rows((out / name).read_text()) == _csv_rows((GOLDEN / "v1-report" / name).read_text()), name
    got = _md_sections((out / "results.md").read_text().replace(str(golden_copy), "v1"))  # the folder's own path
    want = _md_sections((GOLDEN / "v1-report" / "results.md").read_text())
    assert got.keys() == want.keys()
    for heading in want:
        assert got[heading] == want[heading], f"results.md differs under {heading!r}"
