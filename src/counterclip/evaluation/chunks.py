"""A cell's chunks: load the saved ones, compute the rest, share the work with concurrent processes."""

from __future__ import annotations

import time
from pathlib import Path

from .locks import CellLock
from .signals import check_stop
from .state import load_tensors, save_tensors


def chunk_path(folder: Path, cs: int, ce: int) -> Path:
    return Path(folder) / f"{cs:08d}-{ce:08d}.pt"


def run_chunks(folder: Path, ranges: list[tuple[int, int]], compute, progress=lambda n: None,
               poll: float = 0.1) -> list[dict]:
    """Each range's tensors: a whole saved chunk is read back; a missing or damaged one is computed (and saved
    atomically) by this process unless another process holds its lock, in which case it is done after the
    others, reading what that holder saved (or computing it if the holder died). Checks for a stop signal
    between chunks."""
    lock = CellLock(folder)
    results: dict[int, dict] = {}
    looked: set[int] = set()  # a damaged file warns once, not at every poll
    pending = list(ranges)
    try:
        while pending:
            waiting = []
            for cs, ce in pending:
                check_stop()
                path = chunk_path(folder, cs, ce)
                res = load_tensors(path, warn=cs not in looked)
                looked.add(cs)
                if res is None:
                    if not lock.try_acquire(cs):
                        waiting.append((cs, ce))
                        continue
                    try:  # the holder we waited for may have saved it meanwhile
                        res = load_tensors(path, warn=False)
                        if res is None:
                            res = compute(cs, ce)
                            save_tensors(path, res)
                    finally:
                        lock.release(cs)
                results[cs] = res
                progress(ce - cs)
            if waiting and len(waiting) == len(pending):
                time.sleep(poll)
            pending = waiting
    finally:
        lock.close()
    return [results[cs] for cs, _ in ranges]


def saved_work(output: Path) -> tuple[int, int, int]:
    """``(records, cells, samples)`` an earlier run left in ``output``: finished records (a JSON with its
    ``.npz`` sidecar), cell folders under ``.state`` holding saved chunks, and the samples those chunks cover
    (counted per cell: a sample's clean, attacked and defended chunks each count). Read from file names only."""
    output = Path(output)
    records = sum(1 for p in output.rglob("*.json")
                  if ".state" not in p.relative_to(output).parts and p.with_suffix(".npz").is_file())
    spans: dict[Path, int] = {}
    for p in (output / ".state").rglob("*-*.pt"):
        cs, _, ce = p.stem.partition("-")
        if cs.isdigit() and ce.isdigit():
            spans[p.parent] = spans.get(p.parent, 0) + int(ce) - int(cs)
    return records, len(spans), sum(spans.values())
