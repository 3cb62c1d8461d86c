"""Who MAC counterattacks on the embedded model: the corruption degree of MAC's views, clean and PGD-10 4/255, its
mean, the share of views above the paper's 0.7 gate, and the ``gate_thres="auto"`` threshold (90 % quantile on
512 Fashion-MNIST training images, as ``counterclip eval`` calibrates it) with the share above that.

    PYTHONPATH=src .venv/bin/python benchmarks/mac_gate_rates.py [--n 2048] [--blur fixed|scaled]

docs/peers.md quotes its output; run it on the code under PYTHONPATH to compare two versions.
"""

from __future__ import annotations

import argparse

import torch

import counterclip
from counterclip import ZeroShotClassifier
from counterclip.attacks import PGD
from counterclip.data import get_dataset
from counterclip.defenses import MAC
from counterclip.defenses.mac import corruption_degree


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--blur", default="fixed")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = counterclip.load_model("tiny-fmnist")
    test = get_dataset("fashion-mnist", split="test")
    clf = ZeroShotClassifier(model, test.classnames, test.templates)
    x, y = test.dataset.x[:args.n], test.dataset.y[:args.n]
    held = get_dataset("fashion-mnist", split="train").dataset.x[:512]
    mac, auto = MAC(blur=args.blur), MAC(gate_thres="auto", blur=args.blur)
    auto.calibrate(model.encode_image, held, generator=[torch.Generator().manual_seed(i) for i in range(512)])
    pgd = PGD(4 / 255, steps=10, step_size=1 / 255)
    x_adv = torch.cat([pgd(clf, x[i:i + 256], y[i:i + 256], generator=torch.Generator().manual_seed(i))
                       for i in range(0, len(x), 256)])
    for name, inp in (("clean", x), ("pgd-4/255", x_adv)):
        gens = [torch.Generator().manual_seed(10_000 + i) for i in range(len(inp))]
        with torch.no_grad():
            v = mac.views(inp, gens)
            e = model.encode_image(torch.cat([v, mac.augment(v, mac._view_gens(gens, mac.n_views))])).float()
            d = corruption_degree(e[len(v):], e[:len(v)])
        print(f"{name}: mean degree {d.mean():.3f}; views above 0.7: {(d > 0.7).float().mean():.1%}; auto "
              f"threshold {auto.gate_threshold:.3f}: views above it {(d > auto.gate_threshold).float().mean():.1%}")


if __name__ == "__main__":
    main()
