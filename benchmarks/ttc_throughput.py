"""TTC throughput: the undefended classifier vs the reference TTC vs counterclip's TTC, side by side.

    .venv/bin/python benchmarks/ttc_throughput.py [--n 512] [--batch-size 128] [--repeats 3]
        [--device cpu|cuda] [--output BENCHMARKS.md] [--precision bf16] [--threads 1] [--seed 0]

Measures images/s of
  (a) the undefended zero-shot classifier (one forward per image),
  (b) ``reference_ttc_logits``: every counterattack step for every image (the project's literal transcription;
      it runs two no-grad forwards more than the reference code: a second anchor and a separate tau pass),
  (b') ``reference_code_passes`` below: the same algorithm with the reference code's passes (spec section 2,
      "Cost in the reference code"), the fairer yardstick,
  (c) ``TTC.defend``: gated images get no steps and reuse f(x + delta0),
  (d) optionally ``TTC(precision="bf16")`` (``--precision bf16``),
on the same batches, with the same seeded delta0 for every TTC, in two regimes:
  * "most images pass the gate": tau_thres = the 10 % quantile of clean tau (same images, same delta0,
    TTC's default eps), so ~10 % of the images are counterattacked;
  * "every image is counterattacked": tau_thres = inf.
Within each repeat every method makes one pass over all batches; the passes are interleaved batch by batch,
the method order rotating, so load from other jobs on a shared machine hits all methods alike. Speed-ups are
taken per repeat (paired) and their median is reported. Predictions are compared with (b)'s (argmax).
Peak memory of one batch per method is measured too (see ``peak_memory``). The result is printed and written
into its own section of BENCHMARKS.md (other sections are kept).

The model is the embedded ``tiny-fmnist`` CLIP and the images are the Fashion-MNIST test split.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (DEFAULT_OUTPUT, environment, fmt_bytes as _fmt_bytes, interleaved, main_for,  # noqa: E402
                     median as _median, now, quiet_stderr as _quiet_stderr, sync as _sync)
from harness import section  # noqa: E402
from harness import write_section as _write_section  # noqa: E402

SECTION = "ttc_throughput"

# (c) and (b) reach the same peak (the same backward through the same batch); (c) may hold a few bookkeeping
# tensors more at that moment (the gate mask, the step weights: ~140 bytes on 128 images)
MEMORY_TOLERANCE = 1e-3

REGIMES = (
    ("most images pass the gate", "q10"),  # tau_thres = 10 % quantile of clean tau
    ("every image is counterattacked", "inf"),
)


def peak_memory(fn, device: torch.device) -> tuple[int, str]:
    """Peak bytes of tensors allocated by ``fn()`` above what was live when it started, and how it was measured.

    CUDA: ``torch.cuda.max_memory_allocated`` (the caching allocator's exact count of live tensor bytes).
    CPU: the allocator events recorded by ``torch.profiler`` (``profile_memory=True``): every tensor
    allocation (+bytes) and free (-bytes), summed in time order; the maximum of that running sum is the peak
    of live tensor bytes during the call. It counts tensor storage only (no Python objects, no allocator
    slack), the same way for every method, which is what a comparison needs; RSS deltas were not used
    (glibc keeps freed pages, so they are noisy and order-dependent).
    """
    if device.type == "cuda":
        _sync(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base, "torch.cuda.max_memory_allocated"
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # kineto prints start/stop lines to fd 2
        prof.start()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak, "torch.profiler allocation events (peak of live tensor bytes)"


def reference_code_passes(classifier, x, delta0, eps, steps, step_size, tau_thres, beta):
    """TTC with the reference code's passes (spec section 2, "Cost in the reference code"): one no-grad anchor
    forward, N forward+backward steps for every image (the first step's forward also gives tau), one final
    forward. ``reference_ttc_logits`` (b) runs two more no-grad forwards (a second anchor for the tau encoder
    and a separate f(x + delta0) for tau), so (b') is the fairer yardstick for what the reference code costs.
    L-inf only, fp32, as (b)."""
    enc = classifier.encode_image
    with torch.no_grad():
        a = enc(x).float()
    deltas, d, tau = [delta0], delta0, None
    for i in range(steps):
        d = d.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            e = enc(x + d).float()
            if i == 0:
                tau = (e.detach() - a).norm(dim=-1) / a.norm(dim=-1)
            (g,) = torch.autograd.grad((e - a).pow(2).sum(), d)
        with torch.no_grad():
            d = torch.clamp(x + torch.clamp(d + step_size * g.sign(), -eps, eps), 0, 1) - x
        deltas.append(d)
    if tau is None:
        with torch.no_grad():
            tau = (enc(x + delta0).float() - a).norm(dim=-1) / a.norm(dim=-1)
    w = torch.softmax(beta * torch.arange(steps + 1, dtype=torch.float64), 0).float()
    weighted = sum(w[i] * deltas[i] for i in range(steps + 1))
    delta = torch.where((tau < tau_thres).view(-1, 1, 1, 1), weighted, delta0)
    with torch.no_grad():
        return classifier.logits_from_embeddings(enc(x + delta))


# -- the benchmark -------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=512, help="number of test images (default 512)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--output", default=str(DEFAULT_OUTPUT),
                   help="markdown file whose ttc_throughput section is (re)written (default: the repo's "
                        "BENCHMARKS.md); '-' to write nothing")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: also time TTC(precision='bf16') (autocast)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (default 1: on a shared, oversubscribed machine multithreaded "
                        "kernels stall on preempted threads, which hits many small ops harder than few large "
                        "ones and makes ratios erratic; 0 keeps torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    args = p.parse_args(argv)
    if args.n < 1 or args.batch_size < 1 or args.repeats < 1:
        p.error("--n, --batch-size and --repeats must be >= 1")
    return args


def run(args, classifier=None) -> dict:
    """``classifier``: a ready ``ZeroShotClassifier`` on tiny-fmnist with the Fashion-MNIST prompts (tests pass
    theirs to skip the model load); by default it is built here."""
    import counterclip
    from counterclip import ZeroShotClassifier
    from counterclip.data import get_dataset
    from counterclip.defenses import TTC
    from counterclip.defenses.ttc_reference import reference_ttc_logits

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    torch.manual_seed(args.seed)

    ds = get_dataset("fashion-mnist")
    if classifier is None:
        classifier = ZeroShotClassifier(counterclip.load_model("tiny-fmnist"), ds.classnames, ds.templates)
    clf = classifier.to(device)
    x_all = ds.dataset.x[: args.n]
    n = len(x_all)
    batches = [x_all[i:i + args.batch_size].to(device) for i in range(0, n, args.batch_size)]
    proto = TTC()  # the defaults: eps 4/255, 2 steps, step 1/255, beta 2
    delta0s = [proto.random_start(xb, torch.Generator().manual_seed(args.seed * 100003 + i))
               for i, xb in enumerate(batches)]
    with torch.no_grad():
        tau_clean = torch.cat([proto.tau_of(clf.encode_image, xb, d0).cpu() for xb, d0 in zip(batches, delta0s)])
    thresholds = {"q10": float(torch.quantile(tau_clean.double(), 0.1)), "inf": float("inf")}
    ref_kw = dict(eps=proto.eps, steps=proto.steps, step_size=proto.step_size, beta=proto.beta)

    # the methods: each maps (batch index, tau_thres, state) -> logits; state carries one TTC per pass
    def undefended(i, thr, state):
        with torch.no_grad():
            return clf(batches[i])

    def reference(i, thr, state):
        return reference_ttc_logits(clf, batches[i], delta0s[i], tau_thres=thr, **ref_kw)[0]

    def reference_code(i, thr, state):
        return reference_code_passes(clf, batches[i], delta0s[i], tau_thres=thr, **ref_kw)

    def ours(precision):
        def call(i, thr, state):
            if "ttc" not in state:  # a fresh TTC per pass: its running gate rate starts unknown
                state["ttc"] = TTC(tau_thres=thr, precision=precision)
                state["paths"] = []
                state["attacked"] = []
            ttc = state["ttc"]
            out = ttc.defend(clf, batches[i], delta0=delta0s[i])
            state["paths"].append(ttc.last_path)
            state["attacked"].append(out.counterattacked.cpu())
            return out.logits
        return call

    methods = {"a": ("undefended", undefended), "b": ("reference TTC", reference),
               "b'": ("reference-code passes", reference_code), "c": ("TTC", ours("fp32"))}
    if args.precision == "bf16":
        methods["d"] = ("TTC bf16", ours("bf16"))
    keys = list(methods)

    # warm-up (allocator, thread pools, lazy init), untimed and with a throwaway state
    for key in keys:
        for thr in thresholds.values():
            methods[key][1](0, thr, {})

    results = {}
    for regime, rkey in REGIMES:
        thr = thresholds[rkey]
        # one pass per method and repeat, interleaved batch by batch (benchmarks/harness.py); TTC's state lives
        # in its pass
        bound = {k: (lambda i, st, f=methods[k][1]: f(i, thr, st)) for k in keys}
        times, outs, states = interleaved(bound, len(batches), args.repeats, device, warmup=False)
        preds = {k: torch.cat([o.argmax(-1).cpu() for o in outs[k]]) for k in keys}
        paths = {k: st["paths"] for k, st in states.items() if "paths" in st}
        attacked = torch.cat(states["c"]["attacked"])
        res = {
            "tau_thres": thr,
            "ips": {k: _median([n / t for t in times[k]]) for k in keys},
            # time per image relative to the undefended forward, paired per repeat
            "cost": {k: _median([tk / ta for ta, tk in zip(times["a"], times[k])]) for k in keys},
            # speed of (c) [and (d)] over each yardstick, paired per repeat: (median, min, max)
            "speedup": {},
            "agreement": {k: float((preds["b"] == preds[k]).float().mean()) for k in keys if k not in ("a", "b")},
            "attacked_frac": float(attacked.float().mean()),
            "paths": paths,
        }
        pairs = [("c", "b"), ("c", "b'")] + ([("d", "b"), ("d", "c")] if "d" in keys else [])
        for fast, slow in pairs:
            r_ = [ts / tf for ts, tf in zip(times[slow], times[fast])]
            res["speedup"][(fast, slow)] = (_median(r_), min(r_), max(r_))
        if not args.no_memory:
            mem = {}
            for key in keys:
                mem[key], how = peak_memory(lambda: methods[key][1](0, thr, {}), device)
            res["memory"] = mem
            res["memory_how"] = how
            res["memory_batch"] = len(batches[0])
        results[regime] = res

    return {"results": results, "methods": methods, "keys": keys, "n": n, "batches": len(batches),
            "thresholds": thresholds, "device": device}


def _label(methods, k):
    return f"({k}) {methods[k][0]}"


def render(args, out, argv) -> tuple[str, str]:
    """(console text, markdown section)."""
    keys, methods, results = out["keys"], out["methods"], out["results"]
    device = out["device"]
    cmd = " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/ttc_throughput.py", *argv])
    L = []
    L.append(f"- command: `{cmd}`")
    L.append(f"- date: {now()}")
    L.append(f"- {environment(device)}")
    L.append(f"- model tiny-fmnist, Fashion-MNIST test images 0..{out['n'] - 1}: n = {out['n']}, batch size "
             f"{args.batch_size} ({out['batches']} batches), {args.repeats} repeats, seed {args.seed}; TTC "
             f"defaults (eps 4/255, 2 steps, step 1/255, beta 2), the same seeded delta0 for every TTC")
    L.append("- methods: (a) the undefended classifier; (b) `reference_ttc_logits`, every step for every image "
             "(3 no-grad forwards + 2 forward+backward + 1 forward per image); (b') the same with the reference "
             "code's passes (1 no-grad forward + 2 forward+backward + 1 forward: `reference_code_passes` in "
             "this script); (c) `TTC.defend`, a fresh `TTC` per pass"
             + ("; (d) `TTC(precision=\"bf16\").defend`" if "d" in keys else ""))
    L.append("- methods are interleaved batch by batch; images/s: median over repeats; cost: time per image "
             "in undefended forwards; speed-ups: median of the per-repeat (paired) ratios, [min-max]")
    L.append("")
    head = ("| regime | tau_thres | counterattacked | " + " | ".join(f"{_label(methods, k)} img/s" for k in keys)
            + " | " + " | ".join(f"cost ({k})" for k in keys if k != "a") + " |")
    L.append(head)
    L.append("|" + "---|" * (head.count("|") - 1))
    for regime, res in results.items():
        L.append(f"| {regime} | {res['tau_thres']:.4g} | {100 * res['attacked_frac']:.1f} % | "
                 + " | ".join(f"{res['ips'][k]:.0f}" for k in keys) + " | "
                 + " | ".join(f"{res['cost'][k]:.2f}" for k in keys if k != "a") + " |")
    L.append("")
    pairs = list(next(iter(results.values()))["speedup"])
    head = "| regime | " + " | ".join(f"({f})/({s_}) speed-up" for f, s_ in pairs) + " |"
    L.append(head)
    L.append("|" + "---|" * (head.count("|") - 1))
    for regime, res in results.items():
        cells = []
        for pair in pairs:
            med, lo, hi = res["speedup"][pair]
            cell = f"{med:.2f}x [{lo:.2f}-{hi:.2f}]"
            cells.append(f"**{cell}**" if pair == ("c", "b") else cell)
        L.append(f"| {regime} | " + " | ".join(cells) + " |")
    L.append("")
    for regime, res in results.items():
        L.append(f"- {regime}: prediction agreement with (b) (argmax): "
                 + ", ".join(f"({k}) {100 * v:.2f} %" for k, v in res["agreement"].items()))
        for k, p in res["paths"].items():
            counts = {v: p.count(v) for v in dict.fromkeys(p)}
            L.append(f"  - ({k}) delta0-pass path per batch: " + ", ".join(f"{v} x{c}" for v, c in counts.items()))
    if any("memory" in r for r in results.values()):
        r0 = next(r for r in results.values() if "memory" in r)
        L.append("")
        L.append(f"Peak memory of one batch of {r0['memory_batch']}: {r0['memory_how']}; tensor storage only, "
                 "above what was live before the call.")
        L.append("")
        head = "| regime | " + " | ".join(_label(methods, k) for k in keys) + " | (c)/(b) | (c)-(b) |"
        L.append(head)
        L.append("|" + "---|" * (head.count("|") - 1))
        for regime, res in results.items():
            m = res.get("memory")
            if m:
                L.append(f"| {regime} | " + " | ".join(_fmt_bytes(m[k]) for k in keys)
                         + f" | {m['c'] / max(m['b'], 1):.3f} | {m['c'] - m['b']:+,d} B |")
    L.append("")
    L.append("Targets: (c) >= 2.5x (b) when most images pass the gate; (c) no slower than (b) when every image is "
             "counterattacked; the same predictions; (c)'s peak memory <= (b)'s (to within "
             f"{100 * MEMORY_TOLERANCE:g} %: a few bookkeeping tensors).")
    L.append("")
    L.append(targets_line(results))
    body = "\n".join(L)
    return body, section(SECTION, "TTC throughput (`benchmarks/ttc_throughput.py`)", body)


def targets(results) -> dict:
    most, every = results[REGIMES[0][0]], results[REGIMES[1][0]]
    t = {
        "(c) >= 2.5x (b), most pass the gate": most["speedup"][("c", "b")][0] >= 2.5,
        "(c) >= (b), every image counterattacked": every["speedup"][("c", "b")][0] >= 1.0,
        "same predictions": all(r["agreement"]["c"] == 1.0 for r in results.values()),
    }
    if all("memory" in r for r in results.values()):
        t["(c) peak memory <= (b)"] = all(r["memory"]["c"] <= r["memory"]["b"] * (1 + MEMORY_TOLERANCE)
                                          for r in results.values())
    t["(also against (b'): 2.5x / no slower)"] = (most["speedup"][("c", "b'")][0] >= 2.5
                                                  and every["speedup"][("c", "b'")][0] >= 1.0)
    return t


def targets_line(results) -> str:
    return "Met: " + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in targets(results).items())


def write_section(path: Path, section: str):
    _write_section(path, SECTION, section)


def main(argv=None, classifier=None) -> dict:
    return main_for(SECTION, parse_args, run, render, argv, classifier)


if __name__ == "__main__":
    main()
