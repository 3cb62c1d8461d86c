"""What an input gradient through ``Defended(TTC(...))`` costs in each mode, relative to an undefended
forward+backward (median of 3 timed repeats after one warm-up, interleaved).

    python benchmarks/defended_modes.py [device] [model] [n]      # defaults: cpu tiny-fmnist 64
    python benchmarks/defended_modes.py cpu ViT-B-32 4             # random weights, 224 px

TTC has tau_thres=inf (every image counterattacked, the costly case). On CUDA the peak memory of each call is
printed too.
"""

import time, torch, sys, statistics
import counterclip
from counterclip.defenses import TTC, Defended
import torch.nn.functional as F
torch.manual_seed(0)
dev = sys.argv[1] if len(sys.argv) > 1 else "cpu"
name = sys.argv[2] if len(sys.argv) > 2 else "tiny-fmnist"
n = int(sys.argv[3]) if len(sys.argv) > 3 else 64
if name == "tiny-fmnist":
    model = counterclip.load_model(name, device=dev); size = 28
else:
    model = counterclip.load_model(name, pretrained="random", device=dev); size = 224
clf = counterclip.ZeroShotClassifier(model, [f"class {i}" for i in range(10)])
x = torch.rand(n, 3, size, size, device=dev); y = torch.randint(0, 10, (n,), device=dev)
ttc = TTC(tau_thres=float("inf"))
def step(m):
    xi = x.clone().requires_grad_(True)
    loss = F.cross_entropy(m(xi), y)
    torch.autograd.grad(loss, xi)
def fwd(m):
    with torch.no_grad(): m(x)
cands = {"undefended fwd+bwd": (step, clf), "Defended inference (no_grad)": (fwd, Defended(ttc, clf, differentiable=False)),
         "Defended bpda fwd+bwd": (step, Defended(ttc, clf, differentiable="bpda")),
         "Defended full fwd+bwd": (step, Defended(ttc, clf, differentiable="full"))}
res = {k: [] for k in cands}
for r in range(4):  # r = 0 warms up
    for k, (fn, m) in cands.items():
        if dev.startswith("cuda"): torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter(); fn(m)
        if dev.startswith("cuda"): torch.cuda.synchronize()
        if r: res[k].append(time.perf_counter() - t)
        if dev.startswith("cuda") and r == 3: res[k + " peakMiB"] = torch.cuda.max_memory_allocated() / 2**20
base = statistics.median(res["undefended fwd+bwd"])
for k, v in res.items():
    if isinstance(v, list): print(f"{k}: {statistics.median(v)*1000:.1f} ms ({statistics.median(v)/base:.2f}x undefended fwd+bwd)")
    else: print(f"{k}: {v:.0f}")
