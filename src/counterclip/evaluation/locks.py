"""Concurrent writers: several processes may share one output folder and split its work.

Chosen design (rather than refusing the second process): per-chunk locks. Every cell folder has one ``.lock``
file; a process computing chunk ``[start, end)`` holds a POSIX byte-range lock (``fcntl.lockf``) on byte
``start`` of it. Another process skips chunks that are locked, does the others, then waits for the locked ones
and reads what their holder saved. Why: array jobs pointed at one folder then cooperate instead of failing,
and the atomic, checksummed chunk files already make a duplicated computation harmless, so locks only have to
avoid wasted work, never to protect correctness.

Stale locks cannot exist: the kernel drops a process's POSIX locks when it dies (``kill -9`` included), so a
killed holder never blocks anyone. Byte-range locks are the kind NFS (v4, or v3 with lockd) supports across
machines; on a file system without locking (some Lustre/FUSE mounts) a warning says so and runs go on
unlocked: concurrent runs may then duplicate work, never corrupt it.
"""

from __future__ import annotations

import errno
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from .signals import check_stop

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no locks, runs into one folder may duplicate work
    fcntl = None

_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_warned_unsupported: set = set()


class CellLock:
    """Byte-range locks on ``folder/.lock``, one byte per chunk (offset = the chunk's first position)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / ".lock"
        self.fd = None
        self.held: set[int] = set()
        self.supported = fcntl is not None

    def _open(self) -> None:
        if self.fd is None:
            from .state import storage_error

            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise storage_error(e, self.path) from None

    def try_acquire(self, offset: int) -> bool:
        """True when this process now holds chunk ``offset`` (or locking is unsupported here)."""
        self._open()
        if not self.supported:
            return True
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            if e.errno in _UNSUPPORTED:
                self.supported = False
                if str(self.path.parent.parent) not in _warned_unsupported:
                    _warned_unsupported.add(str(self.path.parent.parent))
                    warnings.warn(f"file locks are not supported under {self.path.parent.parent} ({e.strerror}); "
                                  "concurrent runs into this folder may duplicate work (never corrupt it)",
                                  stacklevel=2)
                return True
            raise
        self.held.add(offset)
        return True

    def release(self, offset: int) -> None:
        if offset in self.held:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, offset)
            self.held.discard(offset)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # drops every lock this process holds on the file
            self.fd = None
            self.held.clear()


@contextmanager
def exclusive(folder: Path, offset: int = 0, poll: float = 0.1):
    """Hold byte ``offset`` of ``folder/.lock`` for the block, waiting (interruptibly) while another process
    holds it."""
    lock = CellLock(folder)
    try:
        while not lock.try_acquire(offset):
            check_stop()
            time.sleep(poll)
        yield
    finally:
        lock.close()
