"""The README's "Use it from Python" block runs as written."""

import re
from pathlib import Path


def test_readme_python_example_runs(capsys):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    m = re.search(r"## Use it from Python\s+```python\n(.*?)```", text, re.S)
    assert m, "README lost its Python example"
    exec(compile(m.group(1), "README.md", "exec"), {})
    out = capsys.readouterr().out
    acc = float(re.search(r"TTC accuracy: ([0-9.]+)", out).group(1))
    assert 0.5 < acc <= 1.0
