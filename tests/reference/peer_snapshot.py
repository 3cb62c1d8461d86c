"""Loading the peers' own code from a fetched snapshot, for the dev-only yardstick tests.

A snapshot's path comes from an environment variable (a checkout, or a git directory whose HEAD is unpacked);
the tests skip without it and never guess a path. Their entry modules import the whole training stack (their
CLIP copy, datasets, attack libraries, einops, pkg_resources), so only the model-independent definitions a test
names are executed, from the snapshot's own source, with the module's torch/torchvision/numpy imports.
"""

from __future__ import annotations

import ast
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

LIBRARIES = ("torch", "torchvision", "numpy", "PIL")


def snapshot(env: str, marker: str, tmp_root: Path) -> Path:
    """The checkout named by ``$env`` (unpacked from git when it is a git directory); skips when unset."""
    given = os.environ.get(env)
    if not given:
        pytest.skip(f"set {env} to a snapshot of the authors' repository to run this yardstick")
    path = Path(given)
    if (path / marker).is_file():
        return path
    res = subprocess.run(["git", f"--git-dir={path}", "archive", "HEAD"], capture_output=True)
    if res.returncode != 0:
        res = subprocess.run(["git", "-C", str(path), "archive", "HEAD"], capture_output=True)
    if res.returncode != 0:
        pytest.fail(f"{env}={path}: neither a checkout holding {marker} nor a readable git repository")
    tarfile.open(fileobj=io.BytesIO(res.stdout)).extractall(tmp_root, filter="data")
    return tmp_root


def _library_node(node) -> bool:
    if isinstance(node, ast.Import):
        return all(a.name.split(".")[0] in LIBRARIES for a in node.names)
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] in LIBRARIES and node.level == 0
    if isinstance(node, ast.Try):  # an import with a fallback (torchvision's InterpolationMode and its alias)
        return any(_library_node(n) for n in node.body) and all(
            _library_node(n) or isinstance(n, ast.Assign) for n in node.body)
    return False


def definitions(source: Path, names, namespace: dict | None = None) -> dict:
    """Execute ``source``'s library imports and its top-level definitions or assignments of ``names``."""
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    wanted = set(names)
    keep = []
    for node in tree.body:
        if _library_node(node):
            keep.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in wanted:
            keep.append(node)
            wanted.discard(node.name)
        elif isinstance(node, ast.Assign):
            targets = {n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            if targets & wanted:
                keep.append(node)
                wanted -= targets
    if wanted:
        pytest.fail(f"{source} no longer defines {sorted(wanted)}: the snapshot differs from the one checked")
    ns = {} if namespace is None else namespace
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(source), "exec"), ns)  # noqa: S102 (the authors' code)
    return ns
