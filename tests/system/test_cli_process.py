"""The command line as a user runs it, in its own process: `--help` lists every command and `zeroshot` writes a
record (the in-process CLI checks: tests/integration/test_cli.py)."""

import argparse
import json
import os
import subprocess
import sys

from counterclip.cli import build_parser


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def _run(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}  # small, on shared cores
    return subprocess.run([sys.executable, "-m", "counterclip", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_help_lists_every_command():
    commands = _commands()
    assert {"zeroshot", "train-tiny", "eval", "report", "demo"} <= set(commands)
    res = _run("--help")
    assert res.returncode == 0, res.stderr
    for name in commands:
        assert name in res.stdout, name


def test_zeroshot_writes_a_record(tmp_path):
    res = _run("zeroshot", "--model", "tiny-fmnist", "--dataset", "fashion-mnist", "--limit", "200",
               "--output", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "top-1" in res.stdout
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert rec["model"] == "tiny-fmnist"
    assert rec["pretrained"] == "tiny-fmnist" and rec["pretrained_arg"] is None  # CLIP_benchmark wants a string
    assert rec["dataset"] == "fashion-mnist" and rec["language"] == "en"
    assert rec["task"] == "zeroshot_classification"
    m = rec["metrics"]
    assert m["n_samples"] == 200
    assert 0.0 <= m["clean_acc"] <= 1.0 and m["clean_acc"] > 0.6  # a fraction, and the model works
    assert m["acc1"] == m["clean_acc"]
    lo, hi = m["clean_acc_ci95"]
    assert lo <= m["clean_acc"] <= hi
    assert f"{m['clean_acc']:.4f}" in res.stdout
