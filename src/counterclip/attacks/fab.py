"""FAB (Croce & Hein, ICML 2020, *Minimally distorted adversarial examples with a fast adaptive boundary
attack*), L∞, untargeted (``fab``) and targeted (``fab-t``, AutoAttack's FAB-T).

``FAB(eps, steps=100, targeted=False, n_target_classes=9, restarts=1, alpha_max=0.1, eta=1.05, beta=0.9)``,
written from the paper:

* at the iterate ``x_k`` the decision boundary is linearised: for the targeted version the hyperplane where
  ``z_t - z_y`` vanishes (``t`` the target class), for the untargeted one that of the class ``c != y`` whose
  linearised boundary is closest in L∞ (``|z_c - z_y| / ||grad(z_c - z_y)||_1``, the dual norm);
* ``d1`` and ``d2`` are the minimal-L∞ steps, inside the box [0,1], from ``x_k`` and from the original ``x`` onto
  that hyperplane (``project_linf``: a one-dimensional search over the step's size, solved exactly by sorting);
* the next iterate is the biased combination ``((x_k + eta d1)(1 - alpha) + (x + eta d2) alpha)`` clipped to
  [0,1], with ``alpha = min(|d1| / (|d1| + |d2|), alpha_max)``, which keeps it close to ``x``;
* whenever it is misclassified it is kept if closer to ``x`` than the best so far, and pulled back towards ``x``
  (``x + beta (x_k - x)``), so the search moves along the boundary towards smaller perturbations.

A sample counts as fooled when its closest misclassified point lies within ``eps`` (AutoAttack's rule); it is
then returned, else the clean image. Only correctly classified samples are attacked. The first run starts at
``x``; further restarts (``restarts > 1``) start from a random point at L∞ distance ``eps / 2`` drawn from the
per-sample ``generator``. The targeted version runs once per target (the 2nd, 3rd, ... highest-scoring class of
the clean image, up to ``n_target_classes``, at most ``num_classes - 1``) on the samples not yet fooled; with one
restart it draws no random numbers at all. Gradients are w.r.t. the input only, fp32.
"""

from __future__ import annotations

import torch

from .. import progress, rng
from .base import ATTACKS, Attack, query


def project_linf(p: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row: the smallest-L∞ ``delta`` with ``w . (p + delta) = b`` and ``0 <= p + delta <= 1``.

    Moving each coordinate by ``min(t, room_j)`` in the direction that changes ``w . p`` towards ``b`` changes it
    by ``g(t) = sum_j |w_j| min(t, room_j)``, piecewise linear and non-decreasing in ``t``; the answer is the
    smallest ``t`` with ``g(t) = |b - w . p|``, found between the sorted rooms. When even ``t = max room`` falls
    short (the hyperplane does not meet the box), every coordinate moves as far as the box allows."""
    c = b - (w * p).sum(1)
    s = torch.sign(w) * torch.sign(c)[:, None]
    room = torch.where(s > 0, 1 - p, p).clamp_min(0)
    a = w.abs()
    r_sorted, order = room.sort(dim=1)
    a_sorted = a.gather(1, order)
    # at t = r_k: coordinates before k are saturated, the others move by r_k
    sat = torch.cumsum(a_sorted * r_sorted, 1) - a_sorted * r_sorted  # sum_{i<k} a_i r_i
    rest = a_sorted.flip(1).cumsum(1).flip(1)  # sum_{i>=k} a_i
    g = sat + r_sorted * rest
    need = c.abs()[:, None]
    k = (g < need).sum(1, keepdim=True)  # first index with g >= need
    d = p.shape[1]
    feasible = k < d
    kk = k.clamp(max=d - 1)
    t = (need - sat.gather(1, kk)) / rest.gather(1, kk).clamp_min(1e-12)
    t = torch.where(feasible, t, r_sorted[:, -1:])
    return s * torch.minimum(room, t)


@ATTACKS.register("fab", fixed={"targeted": False}, summary="untargeted FAB (Croce & Hein, ICML 2020)")
@ATTACKS.register("fab-t", fixed={"targeted": True}, summary="targeted FAB (Croce & Hein, ICML 2020)")
class FAB(Attack):
    name = "fab"

    def __init__(self, eps, steps: int = 100, targeted: bool = False, n_target_classes: int = 9, restarts: int = 1,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, norm: str = "linf", generator=None,
                 dtype=torch.float32):
        super().__init__(eps, norm, generator, dtype)
        if norm != "linf":
            raise ValueError("FAB is implemented for the L-inf norm only")
        if steps < 0 or restarts < 1 or n_target_classes < 1:
            raise ValueError("FAB needs steps >= 0, restarts >= 1, n_target_classes >= 1")
        self.steps, self.targeted, self.n_target_classes = int(steps), bool(targeted), int(n_target_classes)
        self.restarts, self.alpha_max, self.eta, self.beta = int(restarts), float(alpha_max), float(eta), float(beta)
        self.name = "fab-t" if targeted else "fab"
        self._q = 0

    def _q_next(self) -> str:
        self._q += 1
        return f"fab:{self._q}"

    def _boundary(self, classifier, x1, y, target, generator):
        """(value f, gradient w) of the linearised boundary chosen at x1: f < 0 while x1 is on y's side."""
        xg = x1.detach().requires_grad_(True)
        logits = query(classifier, xg, generator, self._q_next()).float()
        u = torch.arange(len(y), device=x1.device)
        if target is not None:
            f = logits[u, target] - logits[u, y]
            (w,) = torch.autograd.grad(f.sum(), xg)
            return f.detach(), w.flatten(1)
        k = logits.shape[1]
        grads = []
        for c in range(k):  # the Jacobian, one class at a time (input gradients only)
            (g,) = torch.autograd.grad(logits[:, c].sum(), xg, retain_graph=c < k - 1)
            grads.append(g.flatten(1))
        jac = torch.stack(grads, 1)  # [B, K, D]
        df = (logits - logits[u, y][:, None]).detach()
        dg = jac - jac[u, y][:, None]
        dist = df.abs() / (dg.abs().sum(-1) + 1e-12)
        dist[u, y] = float("inf")
        ind = dist.argmin(1)
        return df[u, ind], dg[u, ind]

    def _run(self, classifier, x, y, target, generator, rand_start: bool):
        b, shape = len(y), x.shape
        x0 = x.flatten(1)
        x1 = x.clone()
        if rand_start:
            t = rng.rand(shape, generator, x.device, x.dtype) * 2 - 1
            t = t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
            x1 = (x + 0.5 * self.eps * t).clamp(0, 1)
        best = x.clone()
        best_d = torch.full((b,), float("inf"), device=x.device)
        for step in range(self.steps):
            f, w = self._boundary(classifier, x1, y, target, generator)
            with torch.no_grad():
                x1f = x1.flatten(1)
                hb = -f + (w * x1f).sum(1)  # the hyperplane w . z = hb
                d = project_linf(torch.cat([x1f, x0]), torch.cat([w, w]), torch.cat([hb, hb]))
                d1, d2 = d[:b], d[b:]
                a1 = d1.abs().amax(1).clamp_min(1e-8)
                a2 = d2.abs().amax(1).clamp_min(1e-8)
                alpha = (a1 / (a1 + a2)).clamp(0, self.alpha_max)[:, None]
                x1f = ((x1f + self.eta * d1) * (1 - alpha) + (x0 + self.eta * d2) * alpha).clamp(0, 1)
                x1 = x1f.view(shape)
                adv = query(classifier, x1, generator, self._q_next()).argmax(-1) != y
                dist = (x1f - x0).abs().amax(1)
                upd = adv & (dist < best_d)
                best[upd] = x1[upd]
                best_d[upd] = dist[upd]
                x1 = torch.where(adv.view(-1, *([1] * (x.ndim - 1))), x + self.beta * (x1 - x), x1)
            progress.advance(step + 1, self.steps)
        return best, best_d

    def perturb(self, classifier, x, y, generator):
        self._q = 0
        with torch.no_grad():
            logits = query(classifier, x, generator, "fab:clean")
        robust = logits.argmax(-1) == y
        order = logits.argsort(dim=1, descending=True)
        out = x.clone()
        n_t = min(self.n_target_classes, logits.shape[-1] - 1)
        targets = list(range(1, n_t + 1)) if self.targeted else [None]
        for ti, t in enumerate(targets):
            for r in range(self.restarts):
                todo = robust.nonzero().flatten()
                if todo.numel() == 0:
                    return out
                target = order[todo, t] if t is not None else None
                with progress.part(ti * self.restarts + r, len(targets) * self.restarts):
                    adv, dist = self._run(classifier, x[todo], y[todo], target, rng.subset(generator, todo), r > 0)
                ok = dist <= self.eps
                out[todo[ok]] = adv[ok]
                robust[todo[ok]] = False
        return out

    def config(self) -> dict:
        cfg = super().config()
        cfg.update(steps=self.steps, targeted=self.targeted, restarts=self.restarts, alpha_max=self.alpha_max,
                   eta=self.eta, beta=self.beta)
        if self.targeted:
            cfg["n_target_classes"] = self.n_target_classes
        return cfg
