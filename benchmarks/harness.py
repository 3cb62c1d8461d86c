"""The shared benchmark harness: every defense against its literal transcription, side by side in one run.

A benchmark gives ``interleaved`` a dict of methods, each ``fn(batch_index, state) -> logits``; the harness runs
them over the same batches, interleaved batch by batch with the order rotating (so load from other jobs on a
shared machine hits every method alike), one fresh ``state`` dict per method and repeat, and returns per-repeat
times and the first repeat's outputs. Speed-ups are paired per repeat. ``write_section`` keeps one section per
benchmark in BENCHMARKS.md. Adding a defense to ``defense_throughput.py`` is a few lines: its fast call and its
transcription's call on the same inputs and randomness.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "BENCHMARKS.md"
INTRO = """# Benchmarks

Numbers are ratios measured side by side in one run; absolute times on these shared 2-core machines mean
little. Each benchmark owns one section below, delimited by HTML comments, and replaces only its own
section when re-run.
"""


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def quiet_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def environment(device: torch.device) -> str:
    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    else:
        name += f" ({platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs)"
    return (f"torch {torch.__version__}, python {platform.python_version()}, device {name}, "
            f"torch threads {torch.get_num_threads()}")


def now() -> str:
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def interleaved(methods: dict, n_batches: int, repeats: int, device: torch.device, warmup: bool = True):
    """``(times, outputs, states)``: ``times[key]`` = seconds per repeat; ``outputs[key]`` and ``states[key]``:
    the first repeat's outputs per batch and its state. ``methods``: key -> ``fn(batch_index, state)``."""
    keys = list(methods)
    if warmup:  # allocator, thread pools, lazy init: untimed, throwaway state
        for k in keys:
            methods[k](0, {})
    sync(device)
    times = {k: [] for k in keys}
    outputs, first_states = {}, {}
    for r in range(repeats):
        states = {k: {} for k in keys}
        total = {k: 0.0 for k in keys}
        outs = {k: [] for k in keys}
        for i in range(n_batches):
            shift = (r * n_batches + i) % len(keys)
            for k in keys[shift:] + keys[:shift]:
                sync(device)
                t0 = time.perf_counter()
                outs[k].append(methods[k](i, states[k]))
                sync(device)
                total[k] += time.perf_counter() - t0
        for k in keys:
            times[k].append(total[k])
        if r == 0:
            outputs, first_states = outs, states
    return times, outputs, first_states


def speedup(times: dict, fast: str, slow: str) -> tuple[float, float, float]:
    """(median, min, max) of the per-repeat ratios slow/fast."""
    r = [ts / tf for ts, tf in zip(times[slow], times[fast])]
    return median(r), min(r), max(r)


def section(name: str, title: str, body: str) -> str:
    """A BENCHMARKS.md section with the markers ``write_section`` replaces it by on the next run."""
    return f"<!-- begin {name} -->\n## {title}\n\n{body}\n<!-- end {name} -->\n"


def write_section(path: Path, name: str, section: str):
    """Replace (or append) the ``<!-- begin NAME -->`` ... ``<!-- end NAME -->`` section of ``path``."""
    path = Path(path)
    text = path.read_text() if path.exists() else INTRO
    pat = re.compile(rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->\n?", re.S)
    if pat.search(text):
        text = pat.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main_for(section: str, parse_args, run, render, argv=None, classifier=None) -> dict:
    """A benchmark's ``main``: parse, run, print, write its section of BENCHMARKS.md (``--output -``: none)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = run(args, classifier)
    body, text = render(args, out, argv)
    print(body)
    if args.output != "-":
        write_section(Path(args.output), section, text)
        print(f"\nwrote the {section} section of {args.output}")
    return out
