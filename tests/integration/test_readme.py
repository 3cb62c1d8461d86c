"""The code blocks of the README and of the docs pages that carry Python run as written: each page's ```python
blocks in order, in one namespace (later blocks use earlier names), and the README's evaluation commands through
the CLI. Only the budgets shrink (fewer attack steps, fewer images), never the code."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# pages whose ```python blocks are runnable; docs/extending.md has its own test (tests/system/test_extending.py)
PAGES = ["README.md", "docs/usage.md"]


def blocks(page: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", (ROOT / page).read_text(), re.S | re.M)


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_run(page, capsys):
    code = blocks(page, "python")
    assert len(code) >= 2, f"{page} lost its Python examples"
    source = "".join(code).replace("steps=10", "steps=2")  # the same code, fewer attack steps for the test
    if "torchattacks" in source:
        pytest.importorskip("torchattacks")
    exec(compile(source, page, "exec"), {})
    out = capsys.readouterr().out
    acc = float(re.search(r"TTC accuracy: ([0-9.]+)", out).group(1))
    assert 0.5 < acc <= 1.0
    attacked = [float(v) for v in re.findall(r"TTC under [\w-]+: ([0-9.]+)", out)]
    assert attacked, f"{page}'s attack example printed nothing"
    assert all(0.0 <= v <= 1.0 for v in attacked)


def _commands(block: str) -> list[list[str]]:
    lines = block.replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if line.strip()]


def test_readme_grid_example_runs(tmp_path):
    """README's "Evaluate a grid": eval then report, as a newcomer types them, on 8 images."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"## Evaluate a grid\s+```bash\n(.*?)```", text, re.S)
    assert m, "README lost its grid example"
    cmds = _commands(re.sub(r"--limit \d+", "--limit 8", m.group(1)))
    assert [c[:2] for c in cmds] == [["counterclip", "eval"], ["counterclip", "report"]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    for cmd in cmds:
        run = subprocess.run([sys.executable, "-m", "counterclip", *cmd[1:]], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
        assert "Traceback" not in run.stderr
    md = (tmp_path / "out/eval/results.md").read_text()
    assert "ttc" in md.lower()
