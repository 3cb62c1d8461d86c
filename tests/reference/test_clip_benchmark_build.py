"""Dev-only yardstick: CLIP_benchmark's own `build` (clip-benchmark==1.6.2, which the Makefile installs) reads
our records as it reads its own; skipped when it is absent."""

import argparse
import csv
import json

import pytest

from counterclip.evaluation.config import EvalConfig
from counterclip.evaluation.grid import GridRunner


cb = pytest.importorskip("clip_benchmark.cli")  # before the grid run: no work when it is absent


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cb")
    cfg = EvalConfig(output=str(out), datasets=["fashion_mnist"], attacks=["none", "pgd"], eps=["4/255"], steps=1,
                     defenses=["none", "rn"], limit=8, batch_size=8, seed=0, probe_size=4)
    GridRunner(cfg, log=lambda *a: None).run()
    return out


def _records(run_dir):
    return [json.loads(p.read_text()) for p in sorted((run_dir / "fashion-mnist").glob("*.json"))]


def test_clip_benchmark_build_reads_our_records(run_dir, tmp_path):
    out = tmp_path / "benchmark.csv"
    cb.main_build(argparse.Namespace(files=[str(run_dir / "fashion-mnist")], output=str(out)))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4
    assert {r["model_fullname"] for r in rows} == {"tiny-fmnist tiny-fmnist"}
    assert sorted(float(r["acc1"]) for r in rows) == sorted(r["metrics"]["acc1"] for r in _records(run_dir))
