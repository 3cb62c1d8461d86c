"""Issue 17's promise, done as a user would: copy a built-in defense's file under a new file, class and CLI word,
add its one import line, and nothing else. ``eval --defense NEW --threat-model both`` runs it (oblivious and
adaptive cells), ``eval --help`` lists it, ``report`` shows it, ``counterclip methods`` names it."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import counterclip

PKG = Path(counterclip.__file__).resolve().parent


def _run(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "counterclip", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def test_a_copied_defense_file_with_one_import_line_is_a_new_defense_everywhere(tmp_path):
    pkg = tmp_path / "site" / "counterclip"
    shutil.copytree(PKG, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    src = (pkg / "defenses" / "hedge.py").read_text()
    new = src.replace("class HedgeDefence(", "class HedgeTwice(").replace('register("hedge"', 'register("hedge2"')
    new = new.replace('name = "hedge"', 'name = "hedge2"')
    assert new != src and "HedgeTwice" in new and '"hedge2"' in new
    (pkg / "defenses" / "hedge_twice.py").write_text(new)
    init = pkg / "defenses" / "__init__.py"
    init.write_text(init.read_text() + "from .hedge_twice import HedgeTwice  # noqa: E402,F401\n")

    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = tmp_path / "run"
    r = _run(["eval", "--dataset", "fashion-mnist", "--attack", "pgd", "--eps", "4/255", "--steps", "2",
              "--defense", "none,hedge2", "--threat-model", "both", "--limit", "4", "--batch-size", "4",
              "--eot-samples", "1", "--output", str(out)], env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line for line in r.stdout.splitlines() if " hedge2 " in line]
    assert {line.split()[4] for line in rows} >= {"oblivious", "adaptive"}, r.stdout
    assert re.search(r"eot-pgd\s+4/255\s+hedge2\s+adaptive", r.stdout)

    help_text = _run(["eval", "--help"], env, tmp_path).stdout
    assert "hedge2" in re.sub(r"-\s+", "-", help_text)
    assert "hedge2" in _run(["methods"], env, tmp_path).stdout
    r = _run(["report", str(out)], env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "hedge2" in (out / "results.md").read_text()
