"""Fault injection, done for real on the embedded model: damaged state and records, a full and a read-only disk
(a real tmpfs where this machine lets us mount one), preemption by real signals, concurrent writers, hostile
image folders. Each fault ends with the numbers of an undisturbed run or with one clear error, and a later
undisturbed re-run gives the undisturbed numbers. Timing only through generous timeouts."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from counterclip.evaluation.config import EvalConfig
from counterclip.evaluation.grid import GridRunner

BASE = dict(datasets=["fashion-mnist"], attacks=["pgd"], eps=["4/255"], steps=2, defenses=["none", "ttc"],
            limit=16, batch_size=4, seed=5, probe_size=4)
# the same configuration on the command line (probe_size only changes the records' sanity notes, not numbers)
CLI = ["eval", "--dataset", "fashion-mnist", "--attack", "pgd", "--eps", "4/255", "--steps", "2", "--defense",
       "none,ttc", "--limit", "16", "--batch-size", "4", "--seed", "5"]


def run(out, **over):
    return GridRunner(EvalConfig(output=str(out), **{**BASE, **over}), log=lambda *a: None).run()


def numbers(out: Path) -> dict:
    """Every record's per-sample results, by record file name."""
    res = {}
    for p in sorted(Path(out).glob("fashion-mnist/*.npz")):
        with np.load(p) as z:
            res[p.name] = {k: z[k] for k in ("index", "clean_correct", "robust_correct", "adv_tau")}
        res[p.name]["metrics"] = json.loads(p.with_suffix(".json").read_text())["metrics"]
    return res


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys() and a
    for name in a:
        for k in ("index", "clean_correct", "robust_correct"):
            assert np.array_equal(a[name][k], b[name][k]), (name, k)
        assert np.allclose(a[name]["adv_tau"], b[name]["adv_tau"], atol=1e-5)
        assert a[name]["metrics"] == b[name]["metrics"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    run(out)
    return out, numbers(out)


def chunks(out: Path, kind: str) -> list[Path]:
    return sorted(p for p in (Path(out) / ".state").rglob("*.pt") if p.parent.name.startswith(kind))


# -- 1. state that checks itself -------------------------------------------------------------------------------

@pytest.mark.slow  # the module's reference run, then a disturbed run and a re-run
def test_damaged_state_and_records_are_recomputed_with_one_warning_each(reference, tmp_path):
    ref_out, ref = reference
    out = tmp_path / "run"
    shutil.copytree(ref_out, out)
    adv = chunks(out, "adv-")
    truncated, garbled = adv[0], adv[1]
    truncated.write_bytes(truncated.read_bytes()[:100])
    data = bytearray(garbled.read_bytes())
    data[len(data) // 3] ^= 0xFF
    garbled.write_bytes(bytes(data))
    foreign = chunks(out, "def-ttc")[0]  # a chunk from another cell, copied over this one
    shutil.copy(chunks(out, "def-none")[0], foreign)
    recs = sorted(out.glob("fashion-mnist/*.json"))
    edited = json.loads(recs[0].read_text())
    edited["metrics"]["robust_acc"] = 0.99  # valid JSON, wrong number
    recs[0].write_text(json.dumps(edited))
    side = recs[1].with_suffix(".npz")
    side.write_bytes(side.read_bytes()[:-10])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(out)
    msgs = [str(w.message) for w in caught]
    for path in (truncated, garbled, foreign, recs[0], recs[1]):
        assert sum(str(path) in m for m in msgs) == 1, (path, msgs)
    assert any("foreign" in m and str(foreign) in m for m in msgs)
    assert_same(ref, numbers(out))
    with warnings.catch_warnings(record=True) as caught:  # now whole again: a re-run trusts everything, silently
        warnings.simplefilter("always")
        run(out)
    assert not [w for w in caught if "recomputing" in str(w.message)]
    assert_same(ref, numbers(out))


@pytest.mark.slow
def test_a_warning_during_a_progress_bar_stands_on_its_own_line(reference, tmp_path, monkeypatch, capsys):
    """The CLI's one-line warning about a damaged chunk comes while that cell's progress bar is drawn: it must
    start its own line, not be glued to the end of the bar's."""
    import sys

    from counterclip.cli import main

    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    garbled = chunks(out, "adv-")[1]
    data = bytearray(garbled.read_bytes())
    data[len(data) // 3] ^= 0xFF
    garbled.write_bytes(bytes(data))
    for rec in out.glob("fashion-mnist/pgd_*.json"):  # so the run reads the attack's chunks again
        rec.unlink()
    # print warnings as a plain run does (pytest records them instead)
    monkeypatch.setattr(warnings, "showwarning", lambda m, c, f, n, file=None, line=None:
                        sys.stderr.write(warnings.formatwarning(m, c, f, n)))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main([*CLI, "--output", str(out)]) == 0
    pieces = capsys.readouterr().err.replace("\r", "\n").splitlines()
    hits = [p for p in pieces if "counterclip: warning:" in p]
    assert len(hits) == 1 and str(garbled) in hits[0]
    assert hits[0].startswith("counterclip: warning:"), hits[0]


@pytest.mark.slow
def test_report_skips_a_damaged_record_naming_it(reference, tmp_path, capsys):
    from counterclip.cli import main

    out = tmp_path / "run"
    shutil.copytree(reference[0], out, ignore=shutil.ignore_patterns(".state"))
    recs = sorted(out.glob("fashion-mnist/*.json"))
    rec = json.loads(recs[0].read_text())
    rec["metrics"]["clean_acc"] = 1.0
    recs[0].write_text(json.dumps(rec))
    recs[1].with_suffix(".npz").write_bytes(b"garbage")
    with pytest.warns(UserWarning) as caught:
        assert main(["report", str(out)]) == 0
    msgs = [str(w.message) for w in caught]
    assert "Traceback" not in capsys.readouterr().err
    assert sum(f"skipped damaged record fashion-mnist/{recs[0].name}" in m for m in msgs) == 1
    assert sum(recs[1].with_suffix(".npz").name in m for m in msgs) == 1
    md = (out / "results.md").read_text()
    assert f"skipped damaged record fashion-mnist/{recs[0].name}" in md  # the table says a row is missing


def all_state_whole(out: Path) -> None:
    """Nothing half-written that a later run would trust: no temp files, every chunk and record verifies."""
    from counterclip.evaluation.integrity import record_problem
    from counterclip.evaluation.state import load_tensors

    assert not [p for p in Path(out).rglob("*.tmp")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for p in Path(out).rglob("*.pt"):
            assert load_tensors(p) is not None, p
    for p in Path(out).glob("*/*.json"):
        assert record_problem(json.loads(p.read_text())) is None, p


# -- 5. changed settings into the same folder --------------------------------------------------------------------

@pytest.mark.slow
def test_changed_settings_never_pass_old_results_as_new(reference, tmp_path):
    from counterclip.report import build_report

    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    old = set(out.glob("fashion-mnist/*.json"))
    written = run(out, seed=6, ttc_steps=3)
    assert written and not set(written) & old  # the new settings' records, none of the old ones
    for p in written:
        rec = json.loads(Path(p).read_text())
        assert rec["seed"] == 6 and rec["settings"]["ttc_steps"] == 3
    assert_same(reference[1], {k: v for k, v in numbers(out).items() if out / "fashion-mnist" / k.replace(
        ".npz", ".json") in old})  # the old records are untouched
    md = (out / "results.md").read_text() if build_report(out) else ""
    assert "come from 2 different configurations" in md
    assert "[seed=5, ttc_steps=2]" in md and "[seed=6, ttc_steps=3]" in md


# -- 2. full disk and read-only file system (a real tmpfs) -------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    import os
    import subprocess

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs for the full-disk test needs root and mount(8)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path, leave: int) -> Path:
    ballast = mnt / "ballast"
    free = shutil.disk_usage(mnt).free
    ballast.write_bytes(b"\0" * max(0, free - leave))
    return ballast


@pytest.mark.slow
def test_full_disk_is_one_clear_error_and_the_same_command_resumes(reference, tmpfs, monkeypatch, capsys):
    import counterclip.evaluation.runner as grid
    from counterclip.cli import main
    from counterclip.evaluation.state import StorageError

    out = tmpfs / "run"
    ballast = fill(tmpfs, 48 * 1024)
    # up front: the estimate does not fit -> refused before any work, one line naming the folder and sizes
    rc = main(["eval", "--dataset", "fashion-mnist", "--attack", "pgd", "--eps", "4/255", "--limit", "16",
               "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not enough space" in err[0] and str(out) in err[0] and "free" in err[0]
    # the disk fills up behind the estimate's back (another job): the real ENOSPC mid-run
    monkeypatch.setattr(grid, "check_space", lambda *a, **k: None)
    with pytest.raises(StorageError, match="no space left writing .*needed.*free.*re-run the same command"):
        run(out)
    all_state_whole(out)
    assert list(out.rglob("*.pt")), "the disk filled before anything was saved: shrink the ballast"
    monkeypatch.undo()
    ballast.unlink()  # space returns
    run(out)
    assert_same(reference[1], numbers(out))
    all_state_whole(out)


@pytest.mark.slow
def test_read_only_file_system_is_one_clear_error(reference, tmpfs):
    import subprocess

    from counterclip.evaluation.state import StorageError

    out = tmpfs / "run"
    out.mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        with pytest.raises(StorageError, match=f"read-only file system: cannot write {out}"):
            run(out)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    run(out)
    assert_same(reference[1], numbers(out))


# -- 6. hostile image folders; devices that are not there ------------------------------------------------------

def _patch_png_size(data: bytes, w: int, h: int) -> bytes:
    """The same PNG with a lying IHDR size (CRC fixed, so only the size lies)."""
    import struct
    import zlib

    ihdr = bytearray(data[8:33])  # length(4) 'IHDR' w h depth color comp filter interlace crc
    ihdr[8:16] = struct.pack(">II", w, h)
    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])))
    return data[:8] + bytes(ihdr) + data[33:]


def test_hostile_image_folder_is_skipped_file_by_file(tmp_path):
    import io
    import os
    import resource

    from PIL import Image

    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for cls in ("coat", "shirt"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(root / cls / f"{i}.png")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(buf, format="PNG")
    png = buf.getvalue()
    hostile = {
        "coat/empty.png": b"",
        "coat/bomb.png": _patch_png_size(png, 40000, 40000),     # 1.6 G pixels claimed by a tiny file
        "coat/gigantic.png": _patch_png_size(png, 9000, 9000),   # over the 64 M pixel cap
        "shirt/lying.png": _patch_png_size(png, 64, 64),         # header larger than its data
        "shirt/text.jpg": b"just some text with an image extension\n",
    }
    for rel, data in hostile.items():
        (root / rel).write_bytes(data)
    os.symlink("self.png", root / "shirt" / "self.png")  # a file symlink loop
    os.symlink("..", root / "shirt" / "up")                 # a directory loop: shirt/up/shirt/up/...
    import torch  # noqa: F401 - imported before the memory baseline
    import torchvision.datasets  # noqa: F401

    from counterclip.data import get_dataset

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_dataset("imagefolder", data_root=root, image_size=28)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grown_mb < 100, f"peak memory grew by {grown_mb:.0f} MB while scanning: a bomb was decoded"
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(out, datasets=["imagefolder"], data_root=str(root), attacks=["none"], defenses=["none"], limit=None)
    msgs = [str(w.message) for w in caught if "imagefolder: skipping" in str(w.message)]
    for name in [*hostile, "shirt/self.png"]:
        assert sum(str(root / name) in m for m in msgs) == 1, (name, msgs)
    assert any("symlink loop" in m for m in msgs)
    rec = json.loads(next((out / "imagefolder").glob("*.json")).read_text())
    assert rec["metrics"]["n_samples"] == 6  # each good image once, despite the directory loop
    assert rec["skipped_images"] == len(msgs) == 7  # the 6 files above and the directory loop


@pytest.mark.parametrize("device", ["cuda:99", "no-such-device"])
def test_a_device_that_is_not_there_fails_in_one_line(tmp_path, capsys, device):
    from counterclip.cli import main

    rc = main(["eval", "--dataset", "fashion-mnist", "--device", device, "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"counterclip: error: --device {device}")
    assert not any(tmp_path.iterdir())


def test_cuda_without_cuda_fails_in_one_line(tmp_path, capsys):
    import torch

    from counterclip.cli import main

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    rc = main(["eval", "--dataset", "fashion-mnist", "--device", "cuda", "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "CUDA is not available" in err[0]


# -- 3. preemption, 4. concurrent writers ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_between_two_attack_steps_and_the_rerun_resumes(reference, tmp_path, monkeypatch, capsys,
                                                                       signame):
    """A real signal, sent from inside PGD's step loop (the 2nd step of the 2nd chunk): the run stops at the
    next encoder pass, keeps the finished chunk, exits 128 + signum with the resume hint (SIGTERM through the
    CLI), and a re-run gives the undisturbed numbers."""
    import os
    import signal

    from counterclip.attacks.pgd import PGD
    from counterclip.cli import main
    from counterclip.evaluation.signals import Preempted

    signum = getattr(signal, signame)
    out = tmp_path / "run"
    calls = {"perturb": 0, "after_signal": 0, "signalled": False}
    orig = PGD.perturb

    def perturb(self, classifier, x, y, generator):
        calls["perturb"] += 1

        def counted(inp):
            if calls["signalled"]:
                calls["after_signal"] += 1
            elif calls["perturb"] == 2 and counted.n == 1:
                calls["signalled"] = True
                os.kill(os.getpid(), signum)
            counted.n += 1
            return classifier(inp)

        counted.n = 0
        return orig(self, counted, x, y, generator)

    monkeypatch.setattr(PGD, "perturb", perturb)
    before = signal.getsignal(signum)
    if signame == "SIGINT":
        with pytest.raises(Preempted) as exc:
            run(out)
        assert exc.value.exit_code == 130
    else:
        assert main([*CLI, "--output", str(out)]) == 143
        err = capsys.readouterr().err
        assert "stopped by SIGTERM; finished work is saved: re-run the same command to resume" in err
    assert signal.getsignal(signum) is before and calls["signalled"]  # the run's handler is gone again
    assert calls["after_signal"] <= 1  # the call in flight; the next encoder pass raised
    assert len(chunks(out, "adv-")) == 1  # the finished chunk is kept, nothing half-written
    all_state_whole(out)
    monkeypatch.undo()
    run(out)
    assert_same(reference[1], numbers(out))


def in_cell(lock: Path) -> set[int]:
    """Pids of counterclip processes that have ``lock`` open (they are working in that cell)."""
    import os

    pids = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if any(os.readlink(fd) == str(lock) for fd in (d / "fd").iterdir()):
                    pids.add(int(d.name))
            except OSError:
                continue
    return pids


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
for offset in sys.argv[2:]:
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, int(offset))
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_concurrent_writers_share_a_folder_and_preemption_stops_every_rank(reference, tmp_path):
    """Real processes on one output folder: a lock holder that gets SIGKILLed, a single-process run and a
    2-rank torchrun run. The holder's chunk is left alone while it lives; SIGTERM stops both torchrun ranks
    with the resume hint; the holder's death frees its chunk (no stale lock) and the single run finishes with
    the undisturbed numbers; a later re-run recomputes nothing."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from counterclip.cli import main
    from counterclip.evaluation.integrity import trailer

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "shared"
    adv_name = chunks(reference[0], "adv-")[0].parent.name  # folder names depend on the configuration only
    adv = out / ".state" / "fashion-mnist" / adv_name
    adv.mkdir(parents=True)
    held = (0, 8)  # one chunk of each torchrun rank's shard
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(adv / ".lock"), *map(str, held)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    cmd = [*CLI, "--output", str(out)]
    single = subprocess.Popen([sys.executable, "-m", "counterclip", *cmd], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    ddp = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "counterclip", *cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    procs = [holder, single, ddp]
    try:
        others = [adv / f"{s:08d}-{s + 4:08d}.pt" for s in (4, 12)]
        # wait until the single run and both ranks work in the shared cell (each has its lock file open); neither
        # can finish while the holder lives, and a hang is the per-test timeout's to end
        while not (all(p.is_file() for p in others) and len(in_cell(adv / ".lock") - {holder.pid}) == 3):
            assert single.poll() is None and ddp.poll() is None, "a run ended while a chunk it needs was held"
            time.sleep(0.1)
        writers = {trailer(p.read_bytes())["writer"] for p in others}
        ddp.send_signal(signal.SIGTERM)  # torchrun forwards it to every rank
        ddp_out = ddp.communicate(timeout=120)[0]
        for rank in (0, 1):
            assert f"stopped by SIGTERM (rank {rank}); finished work is saved: re-run the same command" in ddp_out
        assert single.poll() is None  # still waiting for the holder's chunk
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        _, err = single.communicate(timeout=300)
        assert single.returncode == 0, err[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    print("chunk writers of the shared adversarial cell:", sorted(writers))
    # the held chunks were written once, after the holder died, by the one run still going: a process that
    # computed a chunk while another held its lock would be their writer (checked from the files, at any time)
    single_writer = f"{socket.gethostname()}:{single.pid}"
    for s in held:
        assert trailer((adv / f"{s:08d}-{s + 4:08d}.pt").read_bytes())["writer"] == single_writer, s
    assert_same(reference[1], numbers(out))
    all_state_whole(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*cmd]) == 0
    assert not [w for w in caught if "recomputing" in str(w.message)]
    assert_same(reference[1], numbers(out))
