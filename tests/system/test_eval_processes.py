"""Process-level guarantees of `counterclip eval`: a `kill -9` mid-run resumes to identical numbers, and a
2-process torchrun (gloo) run equals a single-process run. Few subprocesses: each pays torch's import."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # a reference run, then a killed run and its re-run, and a 2-process torchrun run

ARGS = ["eval", "--dataset", "fashion-mnist", "--attack", "pgd", "--eps", "4/255", "--steps", "2",
        "--defense", "none,ttc", "--limit", "24", "--batch-size", "4", "--seed", "3"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def sidecars(out: Path) -> dict:
    res = {}
    for p in sorted(out.glob("fashion-mnist/*.npz")):
        with np.load(p) as z:
            res[p.name] = {k: z[k] for k in z.files}
    return res


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys() and len(a) == 2
    for name in a:
        for k in ("index", "clean_correct", "robust_correct"):
            assert np.array_equal(a[name][k], b[name][k]), (name, k)
        assert np.allclose(a[name]["adv_tau"], b[name]["adv_tau"], atol=1e-5)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    subprocess.run([sys.executable, "-m", "counterclip", *ARGS, "--output", str(out)], env=ENV, check=True,
                   capture_output=True, timeout=600)
    return sidecars(out)


# `python -c KILL_AFTER_SECOND_CHUNK <counterclip args>`: counterclip's own CLI in a process that SIGKILLs itself
# the moment its second adversarial chunk lands (state files are written atomically with os.replace). The kill
# point is a fact of the run, not a moment a poller happened to look, so the test cannot race the run.
KILL_AFTER_SECOND_CHUNK = """
import os, runpy, signal, sys
real_replace, landed = os.replace, []
def replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    if "/adv-" in str(dst) and str(dst).endswith(".pt"):
        landed.append(dst)
        if len(landed) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
sys.argv = ["counterclip", *sys.argv[1:]]
runpy.run_module("counterclip", run_name="__main__")
"""


def test_kill_9_then_rerun_gives_identical_numbers(reference, tmp_path):
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_SECOND_CHUNK, *ARGS, "--output", str(out)], env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]  # it ran to its second chunk, then died
    assert len([p for p in (out / ".state").rglob("*.pt") if "/adv-" in str(p)]) == 2
    assert not list(out.glob("fashion-mnist/*.json")), "killed before any record"
    subprocess.run([sys.executable, "-m", "counterclip", *ARGS, "--output", str(out)], env=ENV, check=True,
                   capture_output=True, timeout=600)
    assert_same(reference, sidecars(out))


def test_torchrun_two_processes_equal_single_process(reference, tmp_path):
    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "counterclip", *ARGS, "--output", str(out)], env=ENV, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert_same(reference, sidecars(out))
    # each rank worked on its own contiguous shard of the 24 samples
    chunks = sorted(p.name for p in (out / ".state").rglob("*.pt") if "/adv-" in str(p))
    assert chunks[0].startswith("00000000-") and any(c.startswith("00000012-") for c in chunks)
