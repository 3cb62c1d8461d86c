"""What a run writes (spec section 5): ``<Method>.pth.tar`` in the TeCoA layout that TTC's and RobustVLM's loaders
accept, the RobustVLM layout with ``--format fare|both``, ``finetune.json``, and the resume state under
``.state/``. Every file is written to a temporary name and moved into place (``os.replace``), so a kill leaves
the previous complete file, never half of one. Only tensors and primitives are stored: every file reloads
with ``torch.load(weights_only=True)`` and no allow-list."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

FORMATS = ("tecoa", "fare", "both")
RESUME_FILE = Path(".state") / "resume.pt"


def atomic_write(path: Path, write) -> None:
    """``write(tmp_path)`` then rename over ``path`` (same folder, so the rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the checkpoint from the other users of a shared folder
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_torch(obj, path: Path) -> None:
    atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def save_json(obj, path: Path) -> None:
    def write(tmp):
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")

    atomic_write(Path(path), write)


def cpu_state(sd: dict) -> dict:
    """fp32 (floating tensors), CPU, contiguous, detached copies: what TTC's un-mapped ``torch.load`` needs."""
    return {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous().clone()
            for k, v in sd.items()}


def to_cpu(obj):
    """An optimiser state dict with every tensor moved to the CPU (nested dicts and lists)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def primitives(obj):
    """``obj`` with only str/int/float/bool/None inside dicts and lists (a guard: a numpy scalar or a Namespace
    would make ``weights_only=True`` refuse the file)."""
    if isinstance(obj, dict):
        return {str(k): primitives(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [primitives(v) for v in obj]
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):  # also str subclasses such as torch.__version__, which would need their class
        return str(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if hasattr(obj, "item"):  # a 0-d tensor or numpy scalar
        return primitives(obj.item())
    return str(obj)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_outputs(out: Path, name: str, tower_sd: dict, optimizer_sd: dict | None, *, epoch: int,
                  best_acc1: float, meta: dict, fmt: str = "tecoa", compat_keys: bool = False) -> list[Path]:
    """The checkpoint files for ``fmt``; returns their paths."""
    sd = cpu_state(tower_sd)
    written = []
    if fmt in ("tecoa", "both"):
        ckpt = {"epoch": int(max(1, epoch)), "vision_encoder_state_dict": sd, "best_acc1": float(best_acc1)}
        if optimizer_sd is not None:
            ckpt["optimizer"] = to_cpu(optimizer_sd)
        ckpt["counterclip"] = primitives(meta)
        if compat_keys:  # byte-level parity with the reference files; generic loaders skip these empty dicts
            ckpt["state_dict"], ckpt["add_prompter"] = {}, {}
        save_torch(ckpt, out / f"{name}.pth.tar")
        written.append(out / f"{name}.pth.tar")
    if fmt in ("fare", "both"):
        save_torch(sd, out / f"{name}.pt")
        written.append(out / f"{name}.pt")
        if optimizer_sd is not None:
            save_torch(to_cpu(optimizer_sd), out / f"{name}_opt.pt")
            written.append(out / f"{name}_opt.pt")
    return written
