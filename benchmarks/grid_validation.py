"""What the grid's output checks (``counterclip.evaluation.validate``) cost: the grid with and without them, side by
side in one run (``benchmarks/harness.py``).

    .venv/bin/python benchmarks/grid_validation.py [--limit 64] [--batch-size 32] [--steps 10] [--repeats 3]
        [--threads 1] [--output BENCHMARKS.md]

Two measurements, each interleaved (checks on / off alternate, the order rotating per repeat):
  * the whole grid: ``GridRunner.run()`` of a fresh run folder (PGD-10 at 4/255, defenses none and TTC,
    oblivious; every chunk computed, saved and gathered, records with their sanity probes written), with the
    checks on, with ``validate.ENABLED = False`` (the switch exists for this benchmark only), and with the
    checks on again: the on/on-again ratio measures the noise the on/off ratio is judged against;
  * the checks alone on one grid batch: the attack's output (shape, finite, box, ball), the defense's logits and
    a gate score, as the grid calls them, against the same batch's undefended forward pass for scale.
Reported: seconds per run (median), the paired ratios on/off and on/on-again [min-max], and the checks' time
per batch. Target (issue 19): the grid's throughput with the checks within noise of its throughput without
them: |median on/off - 1| <= the largest |on/on-again - 1| of the repeats.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (DEFAULT_OUTPUT, environment, interleaved, main_for, median, now, quiet_stderr,  # noqa: E402
                     section, speedup)

SECTION = "grid_validation"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--limit", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--check-iters", type=int, default=200, help="timed calls of the checks alone")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", default=str(DEFAULT_OUTPUT), help="BENCHMARKS.md to update, or - for none")
    return p.parse_args(argv)


def grid_methods(args, scratch: Path):
    from counterclip.evaluation import validate
    from counterclip.evaluation.config import EvalConfig
    from counterclip.evaluation.grid import GridRunner

    def method(enabled):
        def fn(i, state):
            out = scratch / f"{'on' if enabled else 'off'}-{time.monotonic_ns()}"
            cfg = EvalConfig(output=str(out), attacks=["pgd"], eps=["4/255"], steps=args.steps,
                             defenses=["none", "ttc"], limit=args.limit, batch_size=args.batch_size, probe_size=8)
            validate.ENABLED = enabled
            try:
                with quiet_stderr():
                    written = GridRunner(cfg, log=lambda *a, **k: None).run()
            finally:
                validate.ENABLED = True
            shutil.rmtree(out, ignore_errors=True)
            return len(written)
        return fn

    # the same configuration twice: the spread of their ratio is this machine's noise, measured in the same run
    return {"checks on": method(True), "checks off": method(False), "checks on, again": method(True)}


def checks_alone(args):
    """(seconds per batch of the checks, seconds per batch of one undefended forward), medians."""
    import counterclip
    from counterclip import ZeroShotClassifier
    from counterclip.attacks import PGD
    from counterclip.data import get_dataset
    from counterclip.evaluation.validate import BatchCheck

    ds = get_dataset("fashion-mnist")
    clf = ZeroShotClassifier(counterclip.load_model("tiny-fmnist"), ds.classnames, ds.templates)
    bs = args.batch_size
    x, y = ds.dataset.x[:bs], ds.dataset.y[:bs]
    x_adv = PGD(4 / 255, steps=2, step_size=1 / 255)(clf, x, y)
    idx = torch.arange(bs)
    with torch.no_grad():
        logits = clf(x_adv)
    score = torch.rand(bs)

    def checks():
        chk = BatchCheck("fail", idx, clf.num_classes, "bench")
        chk.adversarial("pgd", x, x_adv, 4 / 255)
        chk.logits("ttc", logits)
        chk.gate("ttc", score)
        return chk.finish({"correct": chk.correct(logits, y)})

    def forward():
        with torch.no_grad():
            return clf(x_adv)

    out = {}
    for name, fn in (("checks", checks), ("forward", forward)):
        fn()
        ts = []
        for _ in range(args.check_iters):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[name] = median(ts)
    return out


def run(args, classifier=None) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    scratch = Path(tempfile.mkdtemp(prefix="grid_validation-"))
    try:
        times, outs, _ = interleaved(grid_methods(args, scratch), 1, args.repeats, device, warmup=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    res = {"times": times, "records": {k: v[0] for k, v in outs.items()}, "alone": checks_alone(args),
           "device": device}
    print(res, flush=True)
    return res


def render(args, out, argv) -> tuple[str, str]:
    t = out["times"]
    med, lo, hi = speedup(t, "checks off", "checks on")  # on/off: > 1 means the checks cost time
    same = [a / b for a, b in zip(t["checks on"], t["checks on, again"])]
    noise = max(abs(r - 1) for r in same)
    a = out["alone"]
    cmd = " ".join(shlex.quote(s) for s in [".venv/bin/python", "benchmarks/grid_validation.py", *argv])
    L = [f"- command: `{cmd}`", f"- date: {now()}", f"- {environment(out['device'])}",
         f"- `counterclip eval` as a `GridRunner.run()` of a fresh folder: tiny-fmnist, Fashion-MNIST, {args.limit} "
         f"images in batches of {args.batch_size}, PGD-{args.steps} at 4/255, defenses none and TTC, oblivious "
         f"({out['records']['checks on']} records per run); checks on, `validate.ENABLED = False`, and checks on "
         f"again (the noise), interleaved, {args.repeats} repeats after one untimed warm-up each; ratios: median of "
         "the paired per-repeat ratios [min-max]", "",
         "| grid run | checks on s | checks off s | on again s | on / off | on / on again (noise) |",
         "|---|---|---|---|---|---|",
         f"| {args.limit} images, PGD-{args.steps}, none + TTC | {median(t['checks on']):.1f} | "
         f"{median(t['checks off']):.1f} | {median(t['checks on, again']):.1f} | **{med:.3f}** [{lo:.3f}-{hi:.3f}] | "
         f"{median(same):.3f} [{min(same):.3f}-{max(same):.3f}] |", "",
         f"The checks alone on one batch of {args.batch_size} (attack output, logits, gate score; median of "
         f"{args.check_iters} calls): {1e3 * a['checks']:.3f} ms, {a['checks'] / a['forward']:.3f} of one "
         f"undefended forward pass of that batch ({1e3 * a['forward']:.2f} ms); a grid batch makes "
         f"{2 * (args.steps + 1) + 2} such passes or more (PGD-{args.steps} forward+backward, the defenses).", "",
         "Target: the grid's throughput with the checks within noise of its throughput without them: |median "
         f"on/off - 1| = {abs(med - 1):.3f} <= the largest |on/on again - 1| = {noise:.3f}. Met: "
         f"{'yes' if abs(med - 1) <= noise else 'NO'}"]
    body = "\n".join(L)
    return body, section(SECTION, "The grid's output checks (`benchmarks/grid_validation.py`)", body)


def main(argv=None, classifier=None) -> dict:
    return main_for(SECTION, parse_args, run, render, argv, classifier)


if __name__ == "__main__":
    main()
