"""Run state under ``DIR/.state/``: atomically written chunk files, so a run killed at any moment (even
``kill -9``) resumes where it stopped and never reads a half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch


def stable_hash(obj, n: int = 16) -> str:
    """Hash of a JSON-able object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def file_sha256(path: str | os.PathLike, _cache: dict = {}) -> str:  # noqa: B006 - per-process memo
    path = str(path)
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _cache[key] = h.hexdigest()
    return _cache[key]


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    _atomic(Path(path), lambda f: torch.save({k: v.detach().cpu() for k, v in tensors.items()}, f))


def load_tensors(path: Path) -> dict[str, torch.Tensor] | None:
    """The chunk's tensors, or None when it is missing or unreadable (it is then recomputed)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None


def write_json(path: Path, obj) -> None:
    _atomic(Path(path), lambda f: f.write((json.dumps(obj, indent=2, default=_json_default) + "\n").encode()))


def write_npz(path: Path, arrays: dict) -> None:
    import numpy as np

    _atomic(Path(path), lambda f: np.savez_compressed(f, **arrays))


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
