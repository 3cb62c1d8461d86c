"""Up-front disk space check: estimate what a dataset's cells will write under ``.state`` before starting, say
it for large runs, and refuse in one line when the file system clearly cannot hold it (the per-write check in
``state._atomic`` still catches a disk that fills up later, e.g. by another job)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from .state import StorageError, human_bytes

CHUNK_OVERHEAD = 2048  # torch.save's zip framing + the integrity trailer, per chunk file
RECORD_BYTES = 16384   # a record's JSON + its sidecar at these sizes (generous)
LOUD = 50 * 2 ** 20    # runs writing more than this are announced


def estimate_bytes(n: int, sample_numel: int, batch_size: int, adv_cells: int, other_cells: int,
                   records: int) -> int:
    """Bytes a dataset's state will take: fp16 perturbations for each adversarial-example cell, small per-sample
    tensors for the other cells, chunk framing, and the records."""
    chunks = math.ceil(n / max(1, batch_size)) if n else 0
    cells = adv_cells + other_cells
    return (adv_cells * n * sample_numel * 2 + cells * (n * 32 + chunks * CHUNK_OVERHEAD)
            + records * RECORD_BYTES)


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def folder_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def check_space(folder: Path, estimate: int, log=print) -> None:
    """Raise ``StorageError`` when ``folder``'s file system lacks room for what is not yet written."""
    folder = Path(folder)
    need = max(0, estimate - folder_bytes(folder))
    try:
        free = shutil.disk_usage(_existing(folder)).free
    except OSError:
        return
    if estimate >= LOUD:
        log(f"this run's cache under {folder}: about {human_bytes(estimate)} ({human_bytes(need)} still to write, "
            f"{human_bytes(free)} free)")
    if need > free:
        raise StorageError(f"not enough space for {folder}: this run still needs about {human_bytes(need)} "
                           f"and the file system has {human_bytes(free)} free; free space or point --output "
                           "elsewhere, then re-run the same command")
