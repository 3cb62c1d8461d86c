"""Run state under ``DIR/.state/``: atomically written, self-checking chunk files, so a run killed at any moment
(even ``kill -9``) resumes where it stopped and never trusts a half-written, garbled or foreign file; a full
disk or read-only file system is one clear error."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from ..errors import CounterclipError
from . import integrity


class StateWarning(UserWarning):
    """A state file or record that failed its check and is recomputed (or, in a report, skipped)."""


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


class StorageError(CounterclipError, OSError):
    """The output folder cannot take a write (full disk, quota, read-only file system): one clear line."""


_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def storage_error(exc: OSError, path: Path, size: int | None = None) -> StorageError:
    """One line naming the path, and for a full disk the space the write needed."""
    if exc.errno in _SPACE_ERRNOS:
        try:
            free = shutil.disk_usage(path.parent if path.parent.exists() else path.anchor).free
        except OSError:
            free = None
        need = f"{human_bytes(size)} needed" if size is not None else "space needed"
        have = f", {human_bytes(free)} free" if free is not None else ""
        return StorageError(f"no space left writing {path} ({need}{have}; {os.strerror(exc.errno).lower()}); "
                            "nothing half-written was kept: free space and re-run the same command to resume")
    if exc.errno == errno.EROFS:
        return StorageError(f"read-only file system: cannot write {path}; point --output at a writable folder "
                            "(re-running the same command resumes from what is saved)")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StorageError(f"permission denied writing {path}")
    return StorageError(f"cannot write {path}: {exc.strerror or exc}")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part: a temp
    file in the same folder, fsync, rename. A failed write (full disk, ...) leaves no temp file behind."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as e:
        raise storage_error(e, path, len(data)) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power loss after it keeps the new name); best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _owner(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    path = Path(path)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in tensors.items()}, buf)
    _atomic(path, integrity.frame(buf.getvalue(), _owner(path)))


def load_tensors(path: Path, warn: bool = True) -> dict[str, torch.Tensor] | None:
    """The chunk's tensors, or None when it is missing or fails its integrity check (it is then recomputed;
    a damaged or foreign file gets one warning naming it, unless ``warn`` is False)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        if warn:
            warnings.warn(f"state file {path} is unreadable ({e.strerror}); recomputing it", StateWarning,
                          stacklevel=2)
        return None
    try:
        payload = integrity.unframe(data, _owner(path))
        out = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        if not isinstance(out, dict):
            raise integrity.Damaged("not a dict of tensors")
        return out
    except Exception as e:  # Damaged, or a payload torch cannot parse despite a matching hash
        if warn:
            warnings.warn(f"state file {path} is damaged ({e}); recomputing it", StateWarning, stacklevel=2)
        return None


def require_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A chunk another cell depends on (checked moments ago): one clear error if it vanished or broke since."""
    out = load_tensors(path)
    if out is None:
        raise CounterclipError(f"state file {path} went missing or was damaged while in use (another process, "
                               "or the disk); re-run the same command to recompute it")
    return out


def write_json(path: Path, obj) -> None:
    _atomic(Path(path), (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def json_plain(obj):
    """``obj`` as it reads back from JSON (tuples -> lists, tensors -> lists, ...)."""
    return json.loads(json.dumps(obj, default=_json_default))


def write_npz(path: Path, arrays: dict) -> str:
    """Write a compressed ``.npz`` atomically; returns its sha256 (records keep it to check the sidecar)."""
    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    data = buf.getvalue()
    _atomic(Path(path), data)
    return integrity.sha256(data)


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_finished(path: Path, config_key: str):
    """A finished cell's (record, sidecar arrays) when its record and sidecar are whole and belong to
    ``config_key``; else None (the cell is recomputed), with one warning naming a damaged or foreign file."""
    import numpy as np

    path = Path(path)
    side = path.with_suffix(".npz")
    if not path.is_file() or not side.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
        problem = integrity.record_problem(rec) if isinstance(rec, dict) else "not a JSON object"
    except (OSError, ValueError) as e:
        problem = f"unreadable ({e})"
    if problem is None:
        integ = rec.get("integrity") or {}
        if not integ:
            problem = "no integrity field (written by an older version or by hand)"
        elif integ.get("config_key") != config_key:
            problem = "belongs to a different configuration"
        elif not integrity.file_matches(side, integ.get("sidecar_sha256")):
            problem = f"its sidecar {side.name} is damaged (checksum mismatch)"
    if problem is None:
        try:
            with np.load(side, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:
            problem = f"its sidecar {side.name} is unreadable ({e})"
    if problem is not None:
        warnings.warn(f"record {path} {problem}; recomputing it", StateWarning, stacklevel=2)
        return None
    return rec, arrays
