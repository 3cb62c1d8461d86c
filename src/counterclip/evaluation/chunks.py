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
