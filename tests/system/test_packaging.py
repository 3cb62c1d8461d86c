"""A non-editable wheel carries the embedded weights and the dataset metadata (package data, not just the tree)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    # build from a copy, so the build neither writes build/ or *.egg-info into the tree nor races other runs
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                          "--no-index", "-q", "-w", str(out)], cwd=src, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    wheels = list(out.glob("counterclip-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as z:
        return set(z.namelist())


def test_wheel_has_embedded_weights(wheel):
    assert "counterclip/models/weights/tiny-fmnist/open_clip_model.safetensors" in wheel
    assert "counterclip/models/weights/tiny-fmnist/open_clip_config.json" in wheel


def test_wheel_has_dataset_metadata(wheel):
    metadata = sorted(p.name for p in (ROOT / "src/counterclip/data/metadata").glob("*.json"))
    if not metadata:
        pytest.skip("no dataset metadata files in the tree")
    missing = [n for n in metadata if f"counterclip/data/metadata/{n}" not in wheel]
    assert not missing


def test_wheel_has_the_code_and_entry_point(wheel):
    assert "counterclip/cli.py" in wheel and "counterclip/models/clip_model.py" in wheel
    assert any(n.endswith(".dist-info/entry_points.txt") for n in wheel)


def test_wheel_has_reference_prompt_sets(wheel):
    names = sorted(p.name for p in (ROOT / "src/counterclip/data/metadata/reference").glob("*.json"))
    assert len(names) == 17
    assert all(f"counterclip/data/metadata/reference/{n}" in wheel for n in names)
