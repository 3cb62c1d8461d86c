"""Every defense against its literal transcription, side by side in one run (``benchmarks/harness.py``).

    .venv/bin/python benchmarks/defense_throughput.py [--n 256] [--batch-size 64] [--rtpt-n 64]
        [--rtpt-batch-size 32] [--repeats 3] [--threads 1] [--only ttc,csr,csr-full,mac,rtpt] [--output BENCHMARKS.md]

For each defense, on the same Fashion-MNIST test images (clean, and PGD-10 4/255 adversarial examples made
once on the undefended classifier) and with the same randomness for both:
  * TTC (tau_thres "auto": 10 % quantile of clean tau, 512 training images) vs ``ttc_reference.reference_ttc_logits`` (same delta0);
  * CSR fast / full (gate calibrated on 512 training images: 10 % of clean flagged) vs
    ``csr_reference.reference_csr_logits``;
  * MAC (gate calibrated likewise: 90 % quantile) vs ``mac_reference.reference_mac_logits`` (same generator);
  * R-TPT (64 views) vs ``rtpt_reference.reference_rtpt_logits``, the reference code's pass pattern, on the
    same views (made once, untimed: the view generation is the same code for both; its own throughput is
    reported beside, so the end-to-end ratio can be worked out).
Reported: images/s (median over repeats), the paired speed-up, prediction agreement (argmax), and the encoder
passes per image counted by ``counterclip.cost.PassCounter`` during the first repeat.
Targets (issue 13): R-TPT >= 3x its reference-pattern transcription with identical predictions; CSR and MAC no
slower than their transcriptions, with identical predictions.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_OUTPUT, environment, interleaved, main_for, median, now, section, speedup  # noqa: E402

SECTION = "defense_throughput"
ALL = ("ttc", "csr", "csr-full", "mac", "rtpt")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rtpt-n", type=int, default=64)
    p.add_argument("--rtpt-batch-size", type=int, default=32)
    p.add_argument("--rtpt-views", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=",".join(ALL))
    p.add_argument("--output", default=str(DEFAULT_OUTPUT), help="BENCHMARKS.md to update, or - for none")
    return p.parse_args(argv)


def gens(seed, n):
    return [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in range(n)]


def pairs_for(name, clf, batches, args):
    """(ours, reference) methods ``fn(i, state) -> logits`` for one defense, on ``batches``."""
    from counterclip.data import get_dataset
    from counterclip.defenses import CSR, MAC, RTPT, TTC
    from counterclip.defenses.csr_reference import reference_csr_logits
    from counterclip.defenses.mac_reference import reference_mac_logits
    from counterclip.defenses.rtpt_reference import reference_rtpt_logits
    from counterclip.defenses.ttc_reference import reference_ttc_logits

    held = get_dataset("fashion-mnist", split="train").dataset.x[:512]
    enc = clf.encode_image
    if name == "ttc":
        proto = TTC(tau_thres="auto")
        thr = proto.calibrate(enc, held, generator=gens(args.seed + 1, len(held)))
        d0 = [proto.random_start(xb, gens(args.seed + 7, len(xb))) for xb in batches]
        kw = dict(eps=proto.eps, steps=proto.steps, step_size=proto.step_size, beta=proto.beta, tau_thres=thr)

        def ours(i, st):
            st.setdefault("ttc", TTC(tau_thres=thr))
            return st["ttc"].defend(clf, batches[i], delta0=d0[i]).logits

        return ours, lambda i, st: reference_ttc_logits(clf, batches[i], d0[i], **kw)[0], f"tau_thres {thr:.4g}"
    if name in ("csr", "csr-full"):
        csr = CSR(variant="fast" if name == "csr" else "full", gate_thres="auto")
        csr.calibrate(enc, held)
        return (lambda i, st: csr.defend(clf, batches[i])[0],
                lambda i, st: reference_csr_logits(clf, batches[i], updates=csr.steps, gate_thres=csr.gate_thres)[0],
                f"gate_thres {csr.gate_thres:.4f}")
    if name == "mac":
        mac = MAC(gate_thres="auto")
        mac.calibrate(enc, held, generator=gens(args.seed + 1, len(held)))
        return (lambda i, st: mac.defend(clf, batches[i], gens(args.seed + 3 + i, len(batches[i])))[0],
                lambda i, st: reference_mac_logits(mac, clf, batches[i], gens(args.seed + 3 + i, len(batches[i])))[0],
                f"gate_thres {mac.gate_thres:.4f}")
    if name == "rtpt":
        r = RTPT(views=args.rtpt_views)
        views = [r.views(xb, gens(args.seed + 5 + i, len(xb))) for i, xb in enumerate(batches)]  # untimed

        def ours(i, st):
            with torch.no_grad():
                return r.tune_and_predict(clf, r._features(clf, views[i], chunk=256))

        def ref(i, st):
            return reference_rtpt_logits(r, clf, views[i])

        return ours, ref, f"{args.rtpt_views} views"
    raise ValueError(name)


def run(args, classifier=None) -> dict:
    import counterclip
    from counterclip import ZeroShotClassifier
    from counterclip.attacks import PGD
    from counterclip.cost import PassCounter
    from counterclip.data import get_dataset

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    ds = get_dataset("fashion-mnist")
    clf = classifier or ZeroShotClassifier(counterclip.load_model("tiny-fmnist"), ds.classnames, ds.templates)
    results = {}
    for name in [s for s in args.only.split(",") if s]:
        n, bs = (args.rtpt_n, args.rtpt_batch_size) if name == "rtpt" else (args.n, args.batch_size)
        x, y = ds.dataset.x[:n], ds.dataset.y[:n]
        x_adv = torch.cat([PGD(4 / 255, steps=10, step_size=1 / 255)(clf, x[i:i + bs], y[i:i + bs],
                                                                       generator=gens(args.seed, len(x[i:i + bs])))
                           for i in range(0, n, bs)])
        for inputs, xs in (("clean", x), ("PGD-10 4/255", x_adv)):
            batches = [xs[i:i + bs] for i in range(0, n, bs)]
            ours, ref, setting = pairs_for(name, clf, batches, args)
            counts = {}
            for key, fn in (("ours", ours), ("reference", ref)):
                with PassCounter() as c:
                    fn(0, {})
                counts[key] = c.per_image(len(batches[0]))
            times, outs, _ = interleaved({"ours": ours, "reference": ref}, len(batches), args.repeats, device,
                                         warmup=False)
            pred = {k: torch.cat([o.argmax(-1) for o in v]) for k, v in outs.items()}
            res = {"setting": setting, "n": n, "batch": bs,
                   "ips": {k: median([n / t for t in times[k]]) for k in times},
                   "speedup": speedup(times, "ours", "reference"),
                   "agreement": float((pred["ours"] == pred["reference"]).float().mean()),
                   "accuracy": {k: float((pred[k] == y).float().mean()) for k in pred},
                   "passes": counts}
            if name == "rtpt":
                from counterclip.defenses import RTPT

                r = RTPT(views=args.rtpt_views)
                vt, _, _ = interleaved({"views": lambda i, st: r.views(batches[i], gens(args.seed + 5 + i,
                                                                                         len(batches[i])))},
                                       len(batches), 1, device, warmup=False)
                res["views_ips"] = n / vt["views"][0]
            results[(name, inputs)] = res
            print(name, inputs, res, flush=True)
    return {"results": results, "device": device}


def targets(results) -> dict:
    t = {}
    for (name, inputs), r in results.items():
        goal = 3.0 if name == "rtpt" else 1.0
        t[f"{name} on {inputs}: >= {goal:g}x and identical predictions"] = (r["speedup"][0] >= goal
                                                                            and r["agreement"] == 1.0)
    return t


def render(args, out, argv) -> tuple[str, str]:
    res = out["results"]
    cmd = " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/defense_throughput.py", *argv])
    L = [f"- command: `{cmd}`", f"- date: {now()}", f"- {environment(out['device'])}",
         "- model tiny-fmnist, Fashion-MNIST test images from 0; PGD-10 (4/255, step 1/255) adversarial examples "
         "made once on the undefended classifier; each defense and its transcription get the same inputs and the "
         "same randomness; methods interleaved batch by batch (benchmarks/harness.py); images/s: median over "
         f"{args.repeats} repeats; speed-up: median of the paired per-repeat ratios [min-max]; passes: image-encoder "
         "forwards / backwards per image (text forwards for R-TPT), counted on the first batch", ""]
    head = ("| defense | inputs | setting | n | ours img/s | transcription img/s | speed-up | same predictions | "
            "accuracy ours / transcription | passes ours | passes transcription |")
    L += [head, "|" + "---|" * (head.count("|") - 1)]

    def passes(p, rtpt):
        s = f"{p['image_forwards_per_image']:.2f} F + {p['image_backwards_per_image']:.2f} B"
        return s + (f", text {p['text_forwards_per_image']:.0f} F" if rtpt else "")

    for (name, inputs), r in res.items():
        med, lo, hi = r["speedup"]
        L.append(f"| {name} | {inputs} | {r['setting']} | {r['n']} | {r['ips']['ours']:.1f} | "
                 f"{r['ips']['reference']:.1f} | **{med:.2f}x** [{lo:.2f}-{hi:.2f}] | "
                 f"{100 * r['agreement']:.1f} % | {100 * r['accuracy']['ours']:.1f} / "
                 f"{100 * r['accuracy']['reference']:.1f} % | {passes(r['passes']['ours'], name == 'rtpt')} | "
                 f"{passes(r['passes']['reference'], name == 'rtpt')} |")
    rt = [r for (name, _), r in res.items() if name == "rtpt" and "views_ips" in r]
    if rt:
        L += ["", "R-TPT's view generation alone (the same code for both, outside their timings; add its time "
              "per image to both columns for end-to-end numbers): "
              + ", ".join(f"{r['views_ips']:.1f} img/s" for r in rt)]
    L += ["", "Targets: R-TPT >= 3x its reference-pattern transcription with identical predictions; CSR and MAC "
          "no slower than their transcriptions, with identical predictions (TTC: see ttc_throughput).", "",
          "Met: " + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in targets(res).items())]
    body = "\n".join(L)
    return body, section(SECTION, "Every defense vs its transcription (`benchmarks/defense_throughput.py`)", body)


def main(argv=None, classifier=None) -> dict:
    return main_for(SECTION, parse_args, run, render, argv, classifier)


if __name__ == "__main__":
    main()
