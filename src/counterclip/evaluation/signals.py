"""Preemption: SIGTERM (a scheduler's warning before SIGKILL) and SIGINT stop a run cooperatively.

The handler only raises a flag. The grid checks it at every batch boundary, and a forward pre-hook on the
image encoder checks it before every encoder pass, so attack and defense loops (PGD steps, EOT draws, TTC's
counterattack steps, a user's plugin) stop between two steps without knowing about it. Work already finished
is on disk (every chunk is saved atomically when done); the caller exits with the conventional 128 + signum.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

_state = {"signum": None}
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(BaseException):
    """The run was asked to stop by a signal. A BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` in an attack or a defense swallows it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def stop_requested() -> int | None:
    return _state["signum"]


def check_stop() -> None:
    """Raise ``Preempted`` if a stop signal arrived. Cheap: call it as often as you like."""
    if _state["signum"] is not None:
        raise Preempted(_state["signum"])


def _handler(signum, frame):
    if _state["signum"] is not None and signum == signal.SIGINT:
        raise KeyboardInterrupt  # a second Ctrl-C: stop right now
    _state["signum"] = signum


@contextmanager
def graceful_stop(modules=()):
    """Within the block, SIGTERM/SIGINT set the stop flag instead of killing the process, and every forward
    of ``modules`` checks it. Handlers can only be installed from the main thread; elsewhere the block only
    adds the hooks."""
    _state["signum"] = None
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for s in STOP_SIGNALS:
            previous[s] = signal.signal(s, _handler)
    hooks = [m.register_forward_pre_hook(lambda mod, args: check_stop()) for m in modules if m is not None]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()
        for s, h in previous.items():
            signal.signal(s, h)
