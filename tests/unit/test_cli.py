"""The command line in-process: one-line errors before any work, help without a command, argparse's exit code
(`--help` and a zeroshot record in a real process: tests/system/test_cli_process.py)."""

import pytest

from counterclip.cli import main


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
