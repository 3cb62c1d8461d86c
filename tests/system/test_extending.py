"""docs/extending.md, done exactly as the page says: write its defense file, run its commands in that folder,
and its Python block; the defense (outside the package) runs obliviously and adaptively and is in the report."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the page's commands (an adaptive eval, a report), each in its own process

PAGE = Path(__file__).parents[2] / "docs" / "extending.md"
SRC = Path(__file__).parents[2] / "src"


def _blocks(lang):
    return re.findall(rf"```{lang}([^\n]*)\n(.*?)```", PAGE.read_text(), re.S)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("extending")
    files = [(info.strip(), body) for info, body in _blocks("python") if info.strip()]
    assert [name for name, _ in files] == ["my_defense.py", "noisy_defense.py"]
    for name, body in files:
        (folder / name).write_text(body)
    return folder


@pytest.fixture(scope="module")
def cli_run(workdir):
    """The page's commands, run as written in its folder: what each test then reads, whatever runs first."""
    (_, script), = _blocks("bash")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    for line in script.strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == "counterclip"
        res = subprocess.run([sys.executable, "-m", "counterclip", *argv[1:]], cwd=workdir, env=env,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
    return workdir / "runs/mine"


def test_the_page_commands_run_the_defense_and_report_it(cli_run):
    recs = [json.loads(p.read_text()) for p in (cli_run / "fashion-mnist").glob("*.json")]
    mine = [r for r in recs if r["defense"]["name"] == "my_defense:MyDefense"]
    assert {r["threat_model"] for r in mine} == {"oblivious", "adaptive"}
    for r in mine:
        assert r["defense"]["params"]["kernel"] == 5
        assert r["defense"]["params"]["plugin"] == {"import_path": "my_defense:MyDefense", "args": {"kernel": 5}}
    adaptive = [r for r in mine if r["threat_model"] == "adaptive"]
    assert [r["adaptive_attack"]["name"] for r in adaptive] == ["eot-pgd"]
    assert "'full' mode" in adaptive[0]["adaptive_attack"]["gradient"]
    report = (cli_run / "results.md").read_text()
    assert "my_defense:MyDefense" in report


def test_the_page_python_block_reuses_the_cli_records(workdir, cli_run, monkeypatch, capsys):
    """After the page's commands, the Python API keys the instance as the CLI keyed the class: every record is
    found finished, none is recomputed or rewritten."""
    (_, code), = [b for b in _blocks("python") if not b[0].strip()]
    before = {p: p.stat().st_mtime_ns for p in cli_run.rglob("*.json")}
    assert before
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    exec(compile(code, str(PAGE), "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    mine = [line.split() for line in lines if line.startswith("my_defense:MyDefense")]
    assert {m[1] for m in mine} == {"oblivious", "adaptive"}
    assert all(0.0 <= float(m[3]) <= 1.0 for m in mine)
    after = {p: p.stat().st_mtime_ns for p in cli_run.rglob("*.json")}
    assert after == before  # nothing recomputed or rewritten
