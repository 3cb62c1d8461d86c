"""The README's "Use it from Python" block runs as written."""

import re
from pathlib import Path


def test_readme_python_example_runs(capsys):
    text = (Path(__file__).parents[2] / "README.md").read_text()
    m = re.search(r"## Use it from Python\s+```python\n(.*?)```", text, re.S)
    assert m, "README lost its Python example"
    exec(compile(m.group(1), "README.md", "exec"), {})
    out = capsys.readouterr().out
    acc = float(re.search(r"TTC accuracy: ([0-9.]+)", out).group(1))
    assert 0.5 < acc <= 1.0


def test_readme_attack_library_example_runs(capsys):
    import pytest

    pytest.importorskip("torchattacks")
    text = (Path(__file__).parents[2] / "README.md").read_text()
    setup = re.search(r"## Use it from Python\s+```python\n(.*?)```", text, re.S).group(1)
    m = re.search(r"### Attack through a defense with torchattacks / AutoAttack\s+```python\n(.*?)```", text, re.S)
    assert m, "README lost its attack-library example"
    body = m.group(1).replace("steps=10", "steps=2")  # the same code, fewer steps for the test
    assert len([line for line in body.splitlines() if line.strip()]) <= 5
    exec(compile(setup.replace("[:64]", "[:8]") + body, "README.md", "exec"), {})
    acc = float(re.search(r"TTC under BPDA-PGD: ([0-9.]+)", capsys.readouterr().out).group(1))
    assert 0.0 <= acc <= 1.0
