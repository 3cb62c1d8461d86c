"""Self-checking run state: every file counterclip reads back proves it is whole and whose it is.

- ``.state`` chunk files are framed: ``payload | meta JSON | meta length (8 bytes) | MAGIC``. The meta holds
  the payload's sha256 and the file's *owner* (``cell-folder/file-name``), so a truncated, garbled or foreign
  (copied from another cell) file is detected before torch ever parses it.
- Result records carry ``integrity``: the sha256 of the record's canonical JSON, the full configuration key the
  record belongs to, and the sha256 of its ``.npz`` sidecar.

Torch-free, so the report can use it without importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct

MAGIC = b"CCSTATE1"
_TAIL = 16  # 8-byte meta length + 8-byte magic


class Damaged(ValueError):
    """A file that failed its integrity check; the message says how."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def frame(payload: bytes, owner: str) -> bytes:
    meta = json.dumps({"v": 1, "sha256": sha256(payload), "size": len(payload), "owner": owner,
                       "writer": f"{socket.gethostname()}:{os.getpid()}"}, sort_keys=True).encode()
    return payload + meta + struct.pack("<Q", len(meta)) + MAGIC


def trailer(data: bytes) -> dict:
    """A framed file's metadata (sha256, owner, writer ``host:pid``), unchecked: for diagnostics."""
    (n,) = struct.unpack("<Q", data[-_TAIL:-8])
    return json.loads(data[-_TAIL - n:-_TAIL])


def unframe(data: bytes, owner: str) -> bytes:
    """The payload of a framed file, or ``Damaged`` saying what is wrong with it."""
    if len(data) < _TAIL or data[-8:] != MAGIC:
        raise Damaged("truncated or not a counterclip state file (no integrity trailer)")
    (n,) = struct.unpack("<Q", data[-_TAIL:-8])
    if n > len(data) - _TAIL:
        raise Damaged("integrity trailer is garbled")
    try:
        meta = json.loads(data[-_TAIL - n:-_TAIL])
    except ValueError:
        raise Damaged("integrity trailer is garbled") from None
    payload = data[:-_TAIL - n]
    if not isinstance(meta, dict) or meta.get("size") != len(payload) or meta.get("sha256") != sha256(payload):
        raise Damaged("checksum mismatch (truncated or garbled)")
    if meta.get("owner") != owner:
        raise Damaged(f"belongs to {meta.get('owner')!r}, not to this cell (a foreign file)")
    return payload


def _canonical(rec: dict) -> bytes:
    return json.dumps(rec, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def seal_record(rec: dict, config_key: str, sidecar_sha256: str | None) -> dict:
    """``rec`` (already JSON-plain) with ``integrity`` added: config key, sidecar hash, and its own hash."""
    body = {k: v for k, v in rec.items() if k != "integrity"}
    body["integrity"] = {"config_key": config_key, "sidecar_sha256": sidecar_sha256}
    body["integrity"]["sha256"] = sha256(_canonical(body))
    return body


def record_problem(rec: dict) -> str | None:
    """Why a sealed record cannot be trusted, or None. Unsealed records (hand-written, older versions, other
    tools) are not judged here; callers decide whether to accept them."""
    integ = rec.get("integrity")
    if integ is None:
        return None
    if not isinstance(integ, dict) or "sha256" not in integ:
        return "integrity field is garbled"
    body = {**rec, "integrity": {k: v for k, v in integ.items() if k != "sha256"}}
    if sha256(_canonical(body)) != integ["sha256"]:
        return "checksum mismatch (the record was edited or garbled)"
    return None


def file_matches(path, expected_sha256: str | None) -> bool:
    if expected_sha256 is None:
        return True
    try:
        with open(path, "rb") as f:
            return sha256(f.read()) == expected_sha256
    except OSError:
        return False
