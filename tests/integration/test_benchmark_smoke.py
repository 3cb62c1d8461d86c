"""The TTC throughput benchmark runs end to end on a handful of images (no timing assertions)."""

import importlib.util
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(script: str = "ttc_throughput"):
    """A benchmark script as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"{script}_bench", BENCHMARKS / f"{script}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ttc_throughput_benchmark_smoke(tmp_path, classifier):
    bench = _load()
    out_file = tmp_path / "BENCHMARKS.md"
    threads = torch.get_num_threads()
    try:
        out = bench.main(["--n", "16", "--batch-size", "8", "--repeats", "1", "--output", str(out_file)],
                         classifier=classifier)
    finally:
        torch.set_num_threads(threads)  # the benchmark pins its thread count; leave the session as it was
    text = out_file.read_text()
    assert text.startswith("# Benchmarks")
    for regime, _ in bench.REGIMES:
        assert regime in text
        assert regime in out["results"]
    assert "prediction agreement" in text
    assert text.count("<!-- begin ttc_throughput -->") == 1
    # a re-run replaces its own section and keeps the others
    out_file.write_text(text + "\n<!-- begin other -->\nkept\n<!-- end other -->\n")
    bench.write_section(out_file, "<!-- begin ttc_throughput -->\nnew numbers\n<!-- end ttc_throughput -->\n")
    text2 = out_file.read_text()
    assert text2.count("<!-- begin ttc_throughput -->") == 1
    assert "new numbers" in text2 and "prediction agreement" not in text2 and "kept" in text2


def test_defense_throughput_benchmark_smoke(tmp_path, classifier):
    bench = _load("defense_throughput")
    out_file = tmp_path / "BENCHMARKS.md"
    threads = torch.get_num_threads()
    try:
        out = bench.main(["--n", "8", "--batch-size", "8", "--rtpt-n", "2", "--rtpt-batch-size", "2",
                          "--rtpt-views", "4", "--repeats", "1", "--only", "csr,mac,rtpt", "--output", str(out_file)],
                         classifier=classifier)
    finally:
        torch.set_num_threads(threads)
    text = out_file.read_text()
    assert "<!-- begin defense_throughput -->" in text and "| mac | clean |" in text
    for r in out["results"].values():  # the transcriptions agree with the fast implementations
        assert r["agreement"] == 1.0


def test_grid_validation_benchmark_smoke(tmp_path):
    bench = _load("grid_validation")
    out_file = tmp_path / "BENCHMARKS.md"
    threads = torch.get_num_threads()
    try:
        out = bench.main(["--limit", "8", "--batch-size", "8", "--steps", "1", "--repeats", "1", "--check-iters", "3",
                          "--output", str(out_file)])
    finally:
        torch.set_num_threads(threads)
    from counterclip.evaluation import validate

    assert validate.ENABLED  # the switch is back on
    assert out["records"] == {"checks on": 2, "checks off": 2, "checks on, again": 2}
    assert "<!-- begin grid_validation -->" in out_file.read_text()


def test_finetune_step_benchmark_smoke(tmp_path):
    bench = _load("finetune_step")
    out_file = tmp_path / "BENCHMARKS.md"
    threads = torch.get_num_threads()
    try:
        out = bench.main(["--batch-size", "8", "--steps", "2", "--repeats", "1", "--output", str(out_file)])
    finally:
        torch.set_num_threads(threads)
    assert set(out["results"]) == set(bench.ALL)
    for r in out["results"].values():
        # the trainer's step and the reference-structure transcription made the same updates, and the weights moved
        assert r["ok"] and r["max_weight_diff"] <= 1e-5 < r["max_weight_change"]
        med, lo, hi = r["speedup"]
        assert len(r["ratios"]) == 1 and lo <= med <= hi and med > 0
    text = out_file.read_text()
    assert "<!-- begin finetune_step -->" in text and "| fare |" in text and "same weights (<= 1e-05): yes" in text


def test_finetune_step_benchmark_fails_on_other_weights(tmp_path, monkeypatch):
    bench = _load("finetune_step")
    reset = bench.Transcription.reset

    def shifted(self, tower_state):  # a transcription that starts from other weights must be caught
        reset(self, tower_state)
        with torch.no_grad():
            next(self.tower.parameters()).add_(1e-3)

    monkeypatch.setattr(bench.Transcription, "reset", shifted)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit, match="weights differ"):
            bench.main(["--methods", "tecoa", "--batch-size", "8", "--steps", "1", "--repeats", "1", "--output", "-"])
    finally:
        torch.set_num_threads(threads)
