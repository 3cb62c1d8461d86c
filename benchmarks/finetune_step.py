"""One fine-tuning step: counterclip's ``Trainer._step`` vs a transcription of the reference codes' step.

    .venv/bin/python benchmarks/finetune_step.py [--methods tecoa,pmg-aft,fare] [--batch-size 256] [--steps 3]
        [--repeats 3] [--threads 1] [--seed 0] [--device cpu|cuda] [--tolerance 1e-5] [--output BENCHMARKS.md]

For each method a ``Trainer`` is built from the toy preset (tiny-fmnist, Fashion-MNIST classes 0-4; the preset's
eps, K, step size, momentum, optimiser and lr; ``--batch-size`` images per step, ``--limit`` = batch x steps), and
its ``_step`` is called on the first ``--steps`` batches of epoch 0: the shipped code, not a copy. Beside it, from
the same initial weights, on the same batches and with the same random starts (``attack.start_generators``), runs
``Transcription``: the reference codes' step in this project's terms, with their structure and cost
(``finetune.md``; TeCoA: ZSRobust4FoundationModel ``train``/``attack_pgd``, PMG-AFT: the PMG-AFT repository's
``train``/``attack_pgd``, FARE: RobustVLM ``train_one_epoch``/``pgd``):

  * TeCoA and PMG-AFT: the model is not frozen (the text tower and, for PMG-AFT, the original model keep
    ``requires_grad``), every forward re-encodes the class prompts with the text tower (``model(images, text)``),
    and the training attack calls ``loss.backward()`` on the batch-mean CE, so every attack step computes the
    gradients of every parameter as well as the perturbation's. PMG-AFT's three training branches are three
    forwards, the original model's with grad.
  * FARE: the attack takes ``torch.autograd.grad(loss, perturbation)`` (no parameter gradients, as ours), the
    target is computed once without grad; the training step runs an extra forward with grad on the clean images
    (``embedding_clean``, for logging only with clean weight 0) before the adversarial one.

Where the reference code differs in arithmetic but not in cost, the transcription follows counterclip so that the
updates can be compared: it zeroes the attack's parameter gradients before the training loss (the TeCoA and
PMG-AFT reference codes leave them in ``.grad`` and add them to the update; counterclip reproduces that only under
``--reference``), it clips the random start as the toy preset does (FARE's reference does not), it sets the lr
before the step (FARE's reference steps its scheduler after), it projects as ``clamp(x + delta, 0, 1) - x`` and
computes logits as ``Context.logits`` does (the fixed scale times the cosines; the references multiply by the
exponential of their logit-scale parameter, a scalar). The batch-mean losses of the references' attacks give the
same signs as counterclip's batch sums (exactly so for power-of-two batches).

After each repeat both hold weights; their largest absolute difference must stay under ``--tolerance`` (the
script exits non-zero otherwise). Times: the methods are interleaved step by step (``benchmarks/harness.py``);
images/s is the median over repeats, speed-ups are the median of the paired per-repeat ratios.
Targets (issue 18): ours >= 1.3x the transcription for TeCoA and PMG-AFT, no slower for FARE.
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_OUTPUT, environment, interleaved, main_for, median, now, section, speedup  # noqa: E402

SECTION = "finetune_step"
ALL = ("tecoa", "pmg-aft", "fare")
TARGETS = {"tecoa": 1.3, "pmg-aft": 1.3, "fare": 1.0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default=",".join(ALL), help="comma-separated subset of " + ", ".join(ALL))
    p.add_argument("--batch-size", type=int, default=256, help="images per step (the toy preset's 256)")
    p.add_argument("--steps", type=int, default=3, help="training steps per repeat (one batch each)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (the cuda path is untested)")
    p.add_argument("--tolerance", type=float, default=1e-5,
                   help="largest allowed absolute difference of any weight after the steps (default 1e-5)")
    p.add_argument("--output", default=str(DEFAULT_OUTPUT), help="BENCHMARKS.md to update, or - for none")
    args = p.parse_args(argv)
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.method_list if m not in ALL]
    if bad or not args.method_list:
        p.error(f"--methods: unknown {', '.join(bad) or '(none)'}; valid: {', '.join(ALL)}")
    if args.batch_size < 2 or args.steps < 1 or args.repeats < 1:
        p.error("--batch-size must be >= 2, --steps and --repeats >= 1")
    return args


# -- the transcription ---------------------------------------------------------------------------------------
class Transcription:
    """The reference codes' training step for ``trainer``'s method and settings, on its own copies: a trainable
    tower and optimiser started from ``trainer``'s, and an unfrozen copy of the whole CLIP (text tower, logit
    scale, original vision tower) as the reference codes hold it."""

    def __init__(self, trainer):
        from counterclip.finetune import data as fdata
        from counterclip.finetune.attack import start_generators
        from counterclip.finetune.schedule import lr_at, set_lr
        from counterclip.finetune.trainer import build_optimizer

        self.tr, self.cfg, self.method = trainer, trainer.cfg, trainer.method
        self._load, self._gens, self._lr_at, self._set_lr = fdata.load_batch, start_generators, lr_at, set_lr
        m = self.method
        if getattr(m, "variant", "ttc") != "ttc" or getattr(m, "kl_direction", "student-first") != "student-first" \
                or getattr(m, "clean_weight", 0.0) or getattr(m, "trades", False) or self.cfg["reference"]:
            raise SystemExit("the transcription covers the toy preset's default variants only")
        self.clip = copy.deepcopy(trainer.model)
        self.clip.requires_grad_(True)  # the reference codes freeze nothing but leave it out of the optimiser
        self.f0 = self.clip.visual
        self.backbone = self.clip.backbone
        self.texts = [trainer.template.format(c) for c in trainer.classnames]
        self.scale = trainer.ctx.scale
        self.tower = copy.deepcopy(trainer.tower)  # keeps requires_grad per parameter (--last-n-params)
        self.params = [p for p in self.tower.parameters() if p.requires_grad]
        self.opt = build_optimizer(self.cfg, self.params)  # the references' optimisers are the trainer's
        self.initial_opt = copy.deepcopy(self.opt.state_dict())

    def reset(self, tower_state):
        self.tower.load_state_dict(tower_state)
        self.opt.load_state_dict(self.initial_opt)

    # the pieces, in the reference codes' order of work
    def _P(self, x):
        return self.tr.ctx.preprocess(x)

    def _text(self, ids):
        """``model.encode_text(text_tokens)``: with grad through the (unfrozen) text tower, every forward."""
        return F.normalize(self.backbone.encode_text(ids).float(), dim=-1)

    def _logits(self, tower, x, ids):
        """``model(images, text_tokens)`` then the logits: image and text towers together, every call."""
        e = tower(self._P(x)).float()
        t = self._text(ids)
        return self.scale * F.normalize(e, dim=-1) @ t.t()

    def _start(self, x, idx, epoch):
        from counterclip import rng

        eps = self.cfg["eps"]
        delta = rng.uniform_like(x, -eps, eps, self._gens(self.cfg["seed"], self.cfg["dataset"], epoch, idx))
        return (x + delta).clamp(0, 1) - x

    def _attack_backward(self, x, y, ids, idx, epoch):
        """TeCoA / PMG-AFT ``attack_pgd``: CE mean, ``loss.backward()`` (parameters' gradients too)."""
        cfg = self.cfg
        eps, alpha = cfg["eps"], cfg["step_size"]
        delta = self._start(x, idx, epoch)
        delta.requires_grad_(True)
        for _ in range(cfg["steps"]):
            loss = F.cross_entropy(self._logits(self.tower, x + delta, ids), y)
            loss.backward()
            g = delta.grad.detach()
            d = (delta.detach() + alpha * g.sign()).clamp(-eps, eps)
            d = (x + d).clamp(0, 1) - x
            delta.data = d
            delta.grad.zero_()
        return (x + delta).detach()

    def _attack_fare(self, x, target, idx, epoch):
        """RobustVLM ``pgd`` (L-inf, momentum): ``torch.autograd.grad`` with respect to the perturbation only."""
        cfg = self.cfg
        eps, alpha, mu = cfg["eps"], cfg["step_size"], cfg["momentum"]
        pert = self._start(x, idx, epoch)
        velocity = torch.zeros_like(x)
        for _ in range(cfg["steps"]):
            pert.requires_grad_(True)
            with torch.enable_grad():
                out = self.tower(self._P(x + pert)).float()
                loss = F.mse_loss(out, target, reduction="none").sum(dim=1).mean()
            with torch.no_grad():
                g = torch.autograd.grad(loss, pert)[0].sign()
                velocity = (mu * velocity + g).sign()
                pert = (pert + alpha * velocity).clamp(-eps, eps)
                pert = (x + pert).clamp(0, 1) - x
        return x + pert.detach()

    def step(self, step: int, idx: torch.Tensor) -> float:
        tr, cfg = self.tr, self.cfg
        epoch = step // tr.steps_per_epoch
        x, y = self._load(tr.loaded.dataset, idx, tr.class_map)
        x, y = x.to(tr.device), y.to(tr.device)
        self._set_lr(self.opt, self._lr_at(step, cfg["lr"], tr.warmup, tr.total))
        if self.method.name == "fare":
            return self._fare(step, idx, epoch, x)
        self.opt.zero_grad()
        ids = self.clip.tokenize(self.texts)["ids"]  # clip.tokenize(texts), every step
        self.tower.eval()
        x_adv = self._attack_backward(x, y, ids, idx, epoch)
        # the reference keeps the attack's parameter gradients and adds them to the update; zeroed here so that
        # the update equals counterclip's (whose --reference reproduces the leak)
        self.opt.zero_grad()
        self.tower.train()
        with tr._autocast(tr.train_dtype):
            z_adv = self._logits(self.tower, x_adv, ids)
            loss = F.cross_entropy(z_adv, y)
            if self.method.name == "pmg-aft":
                m = self.method
                z0 = self._logits(self.f0, x_adv, ids)  # the original model, with grad (it is not frozen)
                z_clean = self._logits(self.tower, x, ids)
                lp_adv, lp0, lp_clean = (F.log_softmax(z, -1) for z in (z_adv, z0, z_clean))
                kl_g = (lp_adv.exp() * (lp_adv - lp0)).sum(-1).mean()  # student-first, batch mean
                kl_c = (lp_adv.exp() * (lp_adv - lp_clean)).sum(-1).mean()
                loss = loss + m.lambda_g * kl_g + m.lambda_c * kl_c
        loss.backward()
        self.opt.step()
        self.tower.eval()
        return loss.item()

    def _fare(self, step, idx, epoch, x) -> float:
        tr = self.tr
        with torch.no_grad():
            target = self.f0(self._P(x)).float()
        self.tower.eval()
        x_adv = self._attack_fare(x, target, idx, epoch)
        self.tower.train()
        with tr._autocast(tr.train_dtype):
            e_clean = self.tower(self._P(x)).float()  # embedding_clean: with grad, for the log only
            e_adv = self.tower(self._P(x_adv)).float()
            loss = F.mse_loss(e_adv, target, reduction="none").sum(dim=1).mean()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        with torch.no_grad():  # the reference's logged cosine similarities
            F.cosine_similarity(e_clean, target, dim=1).mean()
            F.cosine_similarity(e_adv, target, dim=1).mean()
        self.tower.eval()
        return loss.item()


# -- the benchmark -------------------------------------------------------------------------------------------
def build_trainer(method: str, args, out_dir: str):
    from counterclip.finetune.config import resolve
    from counterclip.finetune.trainer import Trainer

    cfg = resolve(out_dir, method, "toy", batch_size=args.batch_size, limit=args.batch_size * args.steps,
                  seed=args.seed, device=args.device, threads=args.threads or None, eval_limit=0)
    return Trainer(cfg, log=lambda *a, **k: None)


def snapshot(tower) -> dict:
    return {k: v.detach().clone() for k, v in tower.state_dict().items()}


def run(args, classifier=None) -> dict:
    from counterclip.finetune import data as fdata

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    load = os.getloadavg()
    results = {}
    tmp = tempfile.mkdtemp(prefix="finetune_step_")
    try:
        for method in args.method_list:
            tr = build_trainer(method, args, tmp)
            batches = fdata.epoch_batches(tr.train_idx, 0, args.seed, args.batch_size, 0, 1)[: args.steps]
            init_tower = snapshot(tr.tower)
            init_opt = copy.deepcopy(tr.opt.state_dict())
            ref = Transcription(tr)

            def ours(i, state, tr=tr, batches=batches, init_tower=init_tower, init_opt=init_opt):
                if i == 0:  # a fresh run from the same weights: untimed work is the same for both
                    tr.tower.load_state_dict(init_tower)
                    tr.opt.load_state_dict(init_opt)
                loss = tr._step(i, batches[i])["loss"]
                if i == len(batches) - 1:
                    state["weights"] = snapshot(tr.tower)
                return loss

            def reference(i, state, ref=ref, batches=batches, init_tower=init_tower):
                if i == 0:
                    ref.reset(init_tower)
                loss = ref.step(i, batches[i])
                if i == len(batches) - 1:
                    state["weights"] = snapshot(ref.tower)
                return loss

            times, outs, states = interleaved({"ours": ours, "reference": reference}, len(batches), args.repeats,
                                              device)
            w_ours, w_ref = states["ours"]["weights"], states["reference"]["weights"]
            w_init = init_tower
            diff = max(float((w_ours[k].float() - w_ref[k].float()).abs().max()) for k in w_ours)
            moved = max(float((w_ours[k].float() - w_init[k].float()).abs().max()) for k in w_ours)
            loss_diff = max(abs(a - b) for a, b in zip(outs["ours"], outs["reference"]))
            n_img = args.batch_size * len(batches)
            results[method] = {
                "ips": {k: median([n_img / t for t in ts]) for k, ts in times.items()},
                "speedup": speedup(times, "ours", "reference"),
                "ratios": [tr_ / to for to, tr_ in zip(times["ours"], times["reference"])],
                "max_weight_diff": diff, "max_weight_change": moved, "max_loss_diff": loss_diff,
                "losses": {k: list(v) for k, v in outs.items()},
                "settings": {k: tr.cfg[k] for k in ("eps", "steps", "step_size", "momentum", "optimizer", "lr")},
                "ok": diff <= args.tolerance,
            }
            del tr, ref
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"results": results, "device": device, "load": (load, os.getloadavg())}


def targets(results) -> dict:
    return {m: r["speedup"][0] >= TARGETS[m] for m, r in results.items()}


def render(args, out, argv) -> tuple[str, str]:
    cmd = " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/finetune_step.py", *argv])
    (l0, l1) = out["load"]
    L = [f"- command: `{cmd}`", f"- date: {now()}", f"- {environment(out['device'])}",
         f"- load average (1/5/15 min) at start {l0[0]:.2f}/{l0[1]:.2f}/{l0[2]:.2f}, at end "
         f"{l1[0]:.2f}/{l1[1]:.2f}/{l1[2]:.2f}",
         f"- toy preset (tiny-fmnist, Fashion-MNIST classes 0-4), batch {args.batch_size}, {args.steps} steps per "
         f"repeat (the first batches of epoch 0), {args.repeats} repeats, seed {args.seed}; both start from the "
         "same weights and draw the same random starts",
         "- ours: `Trainer._step` (attack gradients with respect to the perturbation only, text embeddings encoded "
         "once); transcription: `Transcription` in this script, the reference codes' step structure (TeCoA, "
         "PMG-AFT: unfrozen text tower re-encoding the prompts in every forward, `loss.backward()` at every attack "
         "step so every parameter's gradient is computed, PMG-AFT's three training forwards with the original model "
         "under grad; FARE: RobustVLM's attack already takes gradients with respect to the perturbation only, plus "
         "the reference's extra clean forward with grad for its log)",
         "- the TeCoA and PMG-AFT reference codes leave the attack's parameter gradients in `.grad` and add them to "
         "the update (counterclip reproduces that only under `--reference`); the transcription zeroes them before "
         "the training loss so that both make the same update and the weights can be compared",
         "- methods interleaved step by step (benchmarks/harness.py); images/s: median over repeats; speed-up: "
         "median of the paired per-repeat ratios [min-max]; weight difference: largest |ours - transcription| "
         "over every tower weight after the last step (first repeat)",
         ""]
    head = ("| method | K, step, momentum, optimiser | ours img/s | transcription img/s | speed-up | target | "
            "max weight diff | max weight change | max loss diff |")
    L += [head, "|" + "---|" * (head.count("|") - 1)]
    for m, r in out["results"].items():
        s = r["settings"]
        med, lo, hi = r["speedup"]
        L.append(f"| {m} | {s['steps']}, {s['step_size'] * 255:.3g}/255, {s['momentum']:g}, {s['optimizer']} "
                 f"lr {s['lr']:g} | {r['ips']['ours']:.1f} | {r['ips']['reference']:.1f} | **{med:.2f}x** "
                 f"[{lo:.2f}-{hi:.2f}] | >= {TARGETS[m]:g}x | {r['max_weight_diff']:.3g} | "
                 f"{r['max_weight_change']:.3g} | {r['max_loss_diff']:.3g} |")
    L.append("")
    L.append("Per-repeat ratios (transcription time / ours): " + "; ".join(
        f"{m} " + ", ".join(f"{x:.3f}" for x in r["ratios"]) for m, r in out["results"].items()))
    L.append("")
    met = targets(out["results"])
    L.append("Met: " + "; ".join(f"{m} >= {TARGETS[m]:g}x: {'yes' if v else 'NO'}" for m, v in met.items())
             + f"; same weights (<= {args.tolerance:g}): "
             + ("yes" if all(r["ok"] for r in out["results"].values()) else "NO"))
    L += ["", "Where the TeCoA ratio stops (measured once, 2026-12-03, cProfile of three of our steps at batch 256, "
          "one thread): the attack's backward without parameter gradients took 0.30 s per attack step, a backward "
          "with them 0.52 s, each forward 0.23 s. With K = 2 the transcription pays 2 x (0.23 + 0.52) for its "
          "attack and we pay 2 x (0.23 + 0.30), and both pay the same 0.75 s training forward and backward, so on "
          "this toy the speed-up stays near 1.25-1.3x (ratios above that are noise of single repeats). The text "
          "tower the transcription re-encodes in every forward holds only the 5 seen classes' prompts here; under "
          "the `ttc` preset (200 TinyImageNet prompts through ViT-B/32's text tower, forward and backward at every "
          "attack step) that term, which ours never pays, grows with the class count, but it was not measured on "
          "these machines."]
    body = "\n".join(L)
    return body, section(SECTION, "One fine-tuning step vs the reference codes' step (`benchmarks/finetune_step.py`)",
                         body)


def main(argv=None, classifier=None) -> dict:
    out = main_for(SECTION, parse_args, run, render, argv, classifier)
    bad = {m: r["max_weight_diff"] for m, r in out["results"].items() if not r["ok"]}
    if bad:
        raise SystemExit("weights differ between ours and the transcription: "
                         + ", ".join(f"{m} {d:.3g}" for m, d in bad.items()))
    return out


if __name__ == "__main__":
    main()
