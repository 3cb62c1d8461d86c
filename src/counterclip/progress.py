"""Progress inside one call: attacks say how far through their steps they are; whoever shows a bar listens.

The eval grid saves its work in chunks of one batch, and its bars used to move once per chunk: an adaptive
attack through a counterattacking defense spends minutes on one batch (steps x EOT draws x the defense's own
passes), so the bar sat at 0 % that long. Attacks call ``advance(done, total)`` after each step (a no-op unless
someone listens: one context-variable read); ``part(k, n)`` maps an inner attack's steps onto its share of an
outer one (AutoAttack's components, APGD's restarts). Nothing here touches a tensor, a random stream or a key.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

_listener: ContextVar = ContextVar("counterclip_progress", default=None)


def advance(done: float, total: float) -> None:
    """``done`` of ``total`` units of the current call's work are finished."""
    fn = _listener.get()
    if fn is not None and total > 0:
        fn(min(max(done / total, 0.0), 1.0))


@contextmanager
def listening(fn):
    """Calls ``fn(fraction)`` for every ``advance`` inside the block."""
    token = _listener.set(fn)
    try:
        yield
    finally:
        _listener.reset(token)


@contextmanager
def part(k: int, n: int):
    """Inside the block, fractions are of part ``k`` (0-based) of ``n`` equal parts of the enclosing work."""
    outer = _listener.get()
    if outer is None or n <= 0:
        yield
        return
    with listening(lambda f: outer((k + f) / n)):
        yield


def per_chunk(compute, bar):
    """``(compute, on_chunk)`` for ``run_chunks``: the bar moves in whole images as the attack inside a chunk
    advances, and ``on_chunk`` tops it up to the chunk's size when the chunk is saved (or found saved)."""
    shown = [0]

    def run(cs, ce):
        shown[0] = 0

        def on(fraction):
            k = int(fraction * (ce - cs))
            if k > shown[0]:
                bar.update(k - shown[0])
                shown[0] = k

        with listening(on):
            return compute(cs, ce)

    def on_chunk(n):
        bar.update(n - min(shown[0], n))
        shown[0] = 0

    return run, on_chunk
