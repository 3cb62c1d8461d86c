"""Dev-only yardstick: CLIP_benchmark's own `build` (clip-benchmark==1.6.2, which the Makefile installs) reads
our records as it reads its own; skipped when it is absent."""

import argparse
import csv

import pytest
from helpers import records, small_grid_run



cb = pytest.importorskip("clip_benchmark.cli")  # before the grid run: no work when it is absent


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return small_grid_run(tmp_path_factory.mktemp("cb"))


def test_clip_benchmark_build_reads_ourrecords(run_dir, tmp_path):
    out = tmp_path / "benchmark.csv"
    cb.main_build(argparse.Namespace(files=[str(run_dir / "fashion-mnist")], output=str(out)))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4
    assert {r["model_fullname"] for r in rows} == {"tiny-fmnist tiny-fmnist"}
    assert sorted(float(r["acc1"]) for r in rows) == sorted(r["metrics"]["acc1"] for r in records(run_dir))
