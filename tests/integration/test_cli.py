"""The command line: help, the zeroshot record, and one-line errors (two subprocesses, the rest in-process)."""

import argparse
import json
import os
import subprocess
import sys

import pytest

from counterclip.cli import build_parser, main


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


def _one_line_error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_unknown_dataset_is_one_line(tmp_path, capsys):
    line = _one_line_error(capsys, ["zeroshot", "--dataset", "no-such-set", "--output", str(tmp_path)])
    assert "no-such-set" in line and "fashion-mnist" in line and "imagefolder" in line
    assert not list(tmp_path.glob("*.json"))


def test_unknown_model_is_one_line(tmp_path, capsys):
    line = _one_line_error(capsys, ["zeroshot", "--model", "no-such-clip", "--dataset", "fashion-mnist",
                                    "--output", str(tmp_path)])
    assert "no-such-clip" in line and "tiny-fmnist" in line and "ViT-B-32" in line


def test_missing_tag_is_one_line(tmp_path, capsys):
    line = _one_line_error(capsys, ["zeroshot", "--model", "ViT-B-32", "--dataset", "fashion-mnist",
                                    "--output", str(tmp_path)])
    assert "openai" in line


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "zeroshot" in capsys.readouterr().out


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["zeroshot", "--dataset", "fashion-mnist"])  # --output is required
    assert info.value.code == 2
