"""Measurements behind the sanity suite, on a small probe batch (the first ``probe_size`` selected images)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..budgets import eps_str, parse_eps
from ..defenses import Defended
from . import sanity
from .describe import GATE_ATTACKS
from .validate import draws_differ


class Probes:
    """Probes over one dataset's context. ``attack_for(name, eps)`` builds the run's attacks; ``history`` holds
    what the run has measured so far (``obliv``: oblivious robust correctness; ``summary``: records)."""

    def __init__(self, ctx, attack_for, history):
        self.ctx, self.attack_for, self.history = ctx, attack_for, history
        self.data, self.clf = ctx.data, ctx.clf
        k = min(ctx.cfg.probe_size, len(ctx.indices))
        x, y, idx = ctx.batch(0, k)
        self.x, self.y, self.idx = x, y, idx
        with torch.no_grad():
            self.clean_pred = ctx.clf(x).argmax(-1)
        self._memo: dict = {}

    def memo(self, key, fn):
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    def gens(self, stream):
        return self.ctx.gens(self.idx, f"probe:{stream}")

    def _robust(self, attack) -> float:
        x_adv = attack(self.clf, self.x, self.y, generator=self.gens(f"{attack.name}:{attack.eps}:{attack.steps}"))
        with torch.no_grad():
            return float((self.clf(x_adv).argmax(-1) == self.y).float().mean())

    def cheap(self, atk):
        """Composed and query-based attacks probe with a small budget (eps = 0 never fools, so a full budget
        would run every query)."""
        for attr, cap in (("steps", 5), ("queries", 20)):
            if hasattr(atk, attr) and (hasattr(atk, "component_names") or attr == "queries"):
                setattr(atk, attr, min(getattr(atk, attr), cap))
        return atk

    def eps_zero(self, aname):
        def run():
            atk = self.cheap(self.attack_for(aname, 0.0))
            x0 = atk(self.clf, self.x, self.y, generator=self.gens("eps0"))
            with torch.no_grad():
                pred = self.clf(x0).argmax(-1)
            return sanity.eps_zero(self.clean_pred, pred, self.y)
        return self.memo(("eps0", aname), run)

    def steps(self, aname, eps):
        def run():
            full = self.attack_for(aname, eps)
            if hasattr(full, "component_names") or not hasattr(full, "steps"):
                return sanity.check(None, "a composed or query-based attack: its components are checked alone")
            if full.steps < 2:
                return sanity.check(None, "fewer than 2 steps: nothing to compare")
            half = self.attack_for(aname, eps)
            half.steps = full.steps // 2
            return sanity.monotone("the number of steps", self._robust(half), self._robust(full), len(self.y),
                                   f"{half.steps} steps", f"{full.steps} steps (probe images)")
        return self.memo(("steps", aname, eps), run)

    def _grad(self, dname, defense, mode):
        """(input gradient of the CE loss, logits, what) on the probe images, for the attacked model."""
        def run():
            x = self.x.clone().requires_grad_(True)
            with torch.enable_grad():
                model = self.clf if mode is None else Defended(defense, self.clf, differentiable=mode)
                logits = model(x, generator=self.gens("grad")) if mode else model(x)
                (g,) = torch.autograd.grad(F.cross_entropy(logits.float(), self.y, reduction="sum"), x)
            what = "the undefended classifier" if mode is None else f"{dname} (differentiable mode {mode!r})"
            return g, logits.detach(), what
        return self.memo(("grad", dname if mode else None, mode), run)

    def grads(self, dname, defense, mode):
        g, _, what = self._grad(dname, defense, mode)
        return sanity.gradients(g, what)

    def model_flags(self, dname, defense, mode):
        """AutoAttack's checks on the attacked model: zero gradients, output range."""
        g, logits, what = self._grad(dname, defense, mode)
        return {"zero_gradients": sanity.zero_gradients(g, what), "output_range": sanity.output_range(logits)}

    def defense_flags(self, dname, defense):
        """Randomised (two draws differ) and dynamic (gradients computed in the forward pass, or declared)."""
        def run():
            import sys

            calls = {"n": 0}

            def tracer(frame, event, arg):
                if event == "call" and frame.f_code.co_name in ("grad", "backward", "_make_grads"):
                    calls["n"] += 1
                return None

            with torch.no_grad():
                a = defense(self.clf, self.x, generator=torch.Generator().manual_seed(1))
                old = sys.gettrace()
                sys.settrace(tracer)
                try:
                    b = defense(self.clf, self.x, generator=torch.Generator().manual_seed(2))
                finally:
                    sys.settrace(old)
            return {"randomized": sanity.randomized(draws_differ(a, b)),
                    "dynamic": sanity.dynamic(bool(getattr(defense, "dynamic", False)), calls["n"] > 0)}
        return self.memo(("dflags", dname), run)

    def black_box(self, aname, eps, dname, threat, robust_acc, n, stages=None):
        if aname in ("autoattack", "aa-paper") or (stages and threat == "adaptive"):
            if not stages or "square" not in stages["components"]:
                return None
            order = ["clean"] + stages["components"]
            acc = stages["robust_accuracy_dict"]
            before = acc[order[order.index("square") - 1]]
            if order.index("square") == 1:
                return None
            return sanity.black_box_vs_white_box(acc["square"], before, n, "AutoAttack's stages before and after "
                                                 "Square, on the attacked model")
        if aname == "square" and threat == "oblivious":
            white = [float(v.float().mean()) for (a, e, d), v in self.history.obliv.items()
                     if e == eps and d == dname and a not in ("square", "autoattack", "aa-paper")]
            return sanity.black_box_vs_white_box(robust_acc, min(white) if white else None, n,
                                                 "the same samples, white-box attacks of this run")
        return None

    def randomness(self, dname, defense):
        def run():
            with torch.no_grad():
                a = defense(self.clf, self.x, generator=torch.Generator().manual_seed(1))
                b = defense(self.clf, self.x, generator=torch.Generator().manual_seed(2))
            return sanity.randomness(defense, draws_differ(a, b))
        return self.memo(("rand", dname), run)

    def previous(self, aname, eps, dname, threat, adaptive_name):
        """The record of the next smaller budget of the same attack/defense/threat model in this run."""
        best = None
        for r in self.history.summary:
            a = r["adaptive_attack"]["name"] if r.get("adaptive_attack") else r["attack"]["name"]
            if (r["dataset"] == self.data.name and a == (adaptive_name or aname) and r["defense"]["name"] == dname
                    and r["threat_model"] == threat and r["attack"]["eps"] < eps):
                if best is None or r["attack"]["eps"] > best["attack"]["eps"]:
                    best = r
        return best

    def checks(self, aname, eps, attack, dname, defense, threat, robust_acc, n, adaptive, stages=None) -> dict:
        out = {"randomness": self.randomness(dname, defense), **self.defense_flags(dname, defense)}
        if aname == "none":
            return out
        cfg = self.ctx.cfg
        if threat == "oblivious":
            out["eps_zero"] = self.eps_zero(aname)
            out["gradients"] = self.grads(dname, defense, None)
            out.update(self.model_flags(dname, defense, None))
            if dname == "none":
                out["steps_monotone"] = self.steps(aname, eps)
                largest = max(parse_eps(e) for e in cfg.eps)
                if eps == largest:
                    out["collapse"] = sanity.collapse(robust_acc, eps_str(eps))
        else:
            mode = getattr(adaptive, "mode", "full") if adaptive.name not in GATE_ATTACKS else None
            out["gradients"] = self.grads(dname, defense, mode or "full")
            out.update(self.model_flags(dname, defense, mode or "full"))
            obl = [v for (a, e, d), v in self.history.obliv.items() if e == eps and d == dname]
            oblivious_acc = min(float(v.float().mean()) for v in obl) if obl else None
            out["adaptive_le_oblivious"] = sanity.adaptive_vs_oblivious(robust_acc, oblivious_acc)
        bb = self.black_box(aname, eps, dname, threat, robust_acc, n, stages)
        if bb is not None:
            out["black_box_beats_white_box"] = bb
        prev = self.previous(aname, eps, dname, threat, adaptive.name if adaptive is not None else None)
        if prev is not None:
            out["eps_monotone"] = sanity.monotone("eps", prev["metrics"]["robust_acc"], robust_acc, n,
                                                  prev["attack"]["eps_str"], eps_str(eps))
        return out
