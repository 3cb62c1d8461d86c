"""APGD (Croce & Hein, ICML 2020): step-size-free PGD with momentum, AutoAttack's APGD-CE / APGD-DLR.

``APGD(eps, steps=10, norm="linf"|"l2", loss="ce"|"dlr", restarts=1, rho=0.75)``, written from the paper's
Algorithm 1:

* random start in the ball (``uniform(-eps, eps)`` for L∞, a random direction with a random radius for L2, as
  ``PGD`` does), clipped to [0,1];
* step size ``eta = 2 * eps`` per sample; the first step is a plain (projected) gradient step, later ones mix in
  momentum: ``z = P(x_k + eta * s(grad))``, ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))``
  with ``alpha = 0.75``, ``s`` the sign (L∞) or the normalised gradient (L2), ``P`` the projection onto the
  eps-ball and [0,1];
* checkpoints ``w_j = ceil(p_j * steps)``, ``p_0 = 0``, ``p_1 = 0.22``,
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``. At a checkpoint a sample's step size is halved, and its
  iterate restarted from its best (highest-loss) point, when fewer than ``rho * (w_j - w_{j-1})`` of the steps
  since the last checkpoint raised its loss, or when neither its step size nor its best loss changed since the
  last checkpoint.

Each sample keeps its highest-loss point and, separately, its highest-loss *misclassified* point; it returns a
misclassified point whenever one was ever found (as AutoAttack does), else the highest-loss point. With
``restarts > 1`` further runs (fresh random starts) attack only the samples not yet fooled. Losses are per
sample: cross-entropy on the classifier's logits, or the Difference of Logits Ratio (needs >= 3 classes; a
binary task raises a ``ValueError`` before any work). Gradients are w.r.t. the input only.

``eot_iter > 1`` (AutoAttack's ``rand`` version): against a randomised model (a ``Defended`` module whose defense
is ``randomized``) every loss and gradient is the mean over ``eot_iter`` draws of the defense's randomness,
stacked into one batch, the draws seeded from the attack's own per-sample generators (``adaptive.copy_generators``,
a new set per iteration) and never the evaluator's; a point counts as misclassified when more than half of the
draws misclassify it. Against a deterministic model one draw is used whatever ``eot_iter`` says.

``APGDT`` (``apgd-t``, AutoAttack's APGD-T): APGD on the *targeted* DLR loss
``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (``pi`` sorts the logits in decreasing order; needs >= 4
classes), run once per target class ``t`` = the 2nd, 3rd, ... highest-scoring class of the clean image, for
``n_target_classes`` targets (default 9, fewer when there are fewer classes), each run only on the samples not
yet misclassified; a sample's point is the first misclassified one found (any wrong class counts, as in
AutoAttack), else the highest-loss point of the last target.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import ball, progress, rng
from .base import ATTACKS, Attack, dlr_loss, input_grad

LOSSES = ("ce", "dlr")
MOMENTUM = 0.75  # the paper's alpha


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j`` (0 < w_j < steps) at which APGD may halve the step size."""
    p_prev, p = 0.0, 0.22
    out: list[int] = []
    while p <= 1.0:
        w = math.ceil(round(p * steps, 6))
        if 0 < w < steps and (not out or w > out[-1]):
            out.append(w)
        p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)
    return out


def _check_classes(loss: str, num_classes) -> None:
    if loss == "dlr" and num_classes is not None and int(num_classes) < 3:
        dlr_loss(torch.zeros(1, int(num_classes)), torch.zeros(1, dtype=torch.long))  # raises the clear error


def _bcast(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.ndim - 1)))


@ATTACKS.register("apgd-dlr", fixed={"loss": "dlr"}, summary="APGD on the DLR loss (Croce & Hein, ICML 2020)")
@ATTACKS.register("apgd-ce", fixed={"loss": "ce"}, summary="APGD on the cross-entropy (Croce & Hein, ICML 2020)")
class APGD(Attack):
    name = "apgd"

    def __init__(self, eps, steps: int = 10, norm: str = "linf", loss: str = "ce", restarts: int = 1,
                 rho: float = 0.75, eot_iter: int = 1, generator=None, dtype=torch.float32):
        super().__init__(eps, norm, generator, dtype)
        if int(eot_iter) != eot_iter or eot_iter < 1:
            raise ValueError(f"eot_iter must be an integer >= 1, got {eot_iter!r}")
        self.eot_iter = int(eot_iter)
        self._draw = 0  # counts EOT draw sets within one call (their seeds derive from it)
        if loss not in LOSSES:
            raise ValueError(f"unknown APGD loss {loss!r}; valid: {', '.join(LOSSES)}")
        if steps < 0:
            raise ValueError("steps must be >= 0")
        if restarts < 1:
            raise ValueError("restarts must be >= 1")
        if not 0.0 < rho <= 1.0:
            raise ValueError(f"rho must be in (0, 1], got {rho!r}")
        self.steps, self.loss, self.restarts, self.rho = int(steps), loss, int(restarts), float(rho)
        self.name = f"apgd-{loss}"

    def __call__(self, classifier, x, y, generator=None):
        _check_classes(self.loss, getattr(classifier, "num_classes", None))  # before any work, eps=0 included
        self._draw = 0
        return super().__call__(classifier, x, y, generator)

    def loss_per_sample(self, logits: torch.Tensor, y: torch.Tensor, target=None) -> torch.Tensor:
        if self.loss == "ce":
            return F.cross_entropy(logits.float(), y, reduction="none")
        return dlr_loss(logits.float(), y)

    def random_init(self, x: torch.Tensor, generator) -> torch.Tensor:
        return ball.start_point(x, self.eps, generator, self.norm)

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return grad.sign()
        return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.ndim - 1)))

    def draws_for(self, classifier) -> int:
        """EOT draws used against ``classifier``: ``eot_iter`` for a randomised ``Defended`` module, else 1."""
        return self.eot_iter if getattr(getattr(classifier, "defense", None), "randomized", False) else 1

    def _logits(self, classifier, x_adv, generator):
        copies = self.draws_for(classifier)
        if copies == 1 and getattr(classifier, "defense", None) is None:
            return classifier(x_adv), 1
        from .adaptive import copy_generators

        self._draw += 1
        gens = copy_generators(generator, copies, f"apgd-eot:{self._draw}")
        xr = x_adv if copies == 1 else x_adv.repeat(copies, *([1] * (x_adv.ndim - 1)))
        return classifier(xr, generator=gens), copies

    def _evaluate(self, classifier, x_adv, y, need_grad: bool = True, target=None, generator=None):
        """(per-sample loss, input gradient of the summed loss or None, fooled mask) at x_adv; with EOT the loss
        is the mean over the draws and "fooled" means misclassified on more than half of them."""
        with torch.enable_grad() if need_grad else torch.no_grad():
            if need_grad:
                x_adv = x_adv.detach().requires_grad_(True)
            logits, copies = self._logits(classifier, x_adv, generator)
            yr = y if copies == 1 else y.repeat(copies)
            tr = target if copies == 1 or target is None else target.repeat(copies)
            loss = self.loss_per_sample(logits, yr, tr).view(copies, len(y)).mean(0)
            grad = input_grad(loss.sum(), x_adv).detach() if need_grad else None
        wrong = (logits.detach().argmax(-1) != yr).view(copies, len(y)).float().mean(0)
        return loss.detach(), grad, wrong > 0.5

    def _run(self, classifier, x, y, generator, target=None):
        """One APGD run: (returned point, its loss, fooled mask) per sample."""
        ev = lambda xa, need_grad=True: self._evaluate(classifier, xa, y, need_grad, target, generator)  # noqa: E731
        x_cur = self.random_init(x, generator)
        loss, grad, fooled = ev(x_cur, need_grad=self.steps > 0)
        best_x, best_loss = x_cur.clone(), loss.clone()
        best_grad = grad.clone() if grad is not None else None
        adv_x, adv_loss = x_cur.clone(), torch.where(fooled, loss, torch.full_like(loss, -math.inf))
        ever_fooled = fooled.clone()

        eta = torch.full((x.shape[0],), 2.0 * self.eps, device=x.device, dtype=x.dtype)
        x_prev = x_cur
        ckpts = set(checkpoints(self.steps))
        last_ckpt = 0
        n_increase = torch.zeros_like(loss)
        best_loss_at_ckpt = best_loss.clone()
        halved_at_ckpt = torch.zeros_like(fooled)

        for k in range(self.steps):
            a = 1.0 if k == 0 else MOMENTUM
            z = self.project(x_cur + _bcast(eta, x) * self.direction(grad), x)
            x_next = self.project(x_cur + a * (z - x_cur) + (1.0 - a) * (x_cur - x_prev), x)
            last = k == self.steps - 1
            loss_n, grad_n, fooled_n = ev(x_next, need_grad=not last)

            n_increase += (loss_n > loss).to(n_increase.dtype)
            better = loss_n > best_loss
            best_x = torch.where(_bcast(better, x), x_next, best_x)
            best_loss = torch.where(better, loss_n, best_loss)
            if not last:
                best_grad = torch.where(_bcast(better, x), grad_n, best_grad)
            better_adv = fooled_n & (loss_n > adv_loss)
            adv_x = torch.where(_bcast(better_adv, x), x_next, adv_x)
            adv_loss = torch.where(better_adv, loss_n, adv_loss)
            ever_fooled |= fooled_n

            x_prev, x_cur, loss, grad = x_cur, x_next, loss_n, grad_n
            progress.advance(k + 1, self.steps)
            if k + 1 in ckpts:
                window = k + 1 - last_ckpt
                few_increases = n_increase < self.rho * window
                stalled = ~halved_at_ckpt & (best_loss <= best_loss_at_ckpt)
                halve = few_increases | stalled
                eta = torch.where(halve, eta / 2, eta)
                hb = _bcast(halve, x)
                x_cur = torch.where(hb, best_x, x_cur)
                x_prev = torch.where(hb, best_x, x_prev)  # a restart carries no momentum
                grad = torch.where(hb, best_grad, grad)
                loss = torch.where(halve, best_loss, loss)
                halved_at_ckpt, best_loss_at_ckpt = halve, best_loss.clone()
                n_increase.zero_()
                last_ckpt = k + 1

        out = torch.where(_bcast(ever_fooled, x), adv_x, best_x)
        out_loss = torch.where(ever_fooled, adv_loss, best_loss)
        return out, out_loss, ever_fooled

    def perturb(self, classifier, x, y, generator):
        with progress.part(0, self.restarts):
            x_out, loss_out, fooled = self._run(classifier, x, y, generator)
        for r in range(1, self.restarts):
            todo = (~fooled).nonzero().flatten()
            if todo.numel() == 0:
                break
            with progress.part(r, self.restarts):
                xs, ls, fs = self._run(classifier, x[todo], y[todo], rng.subset(generator, todo))
            take = fs | (ls > loss_out[todo])
            idx = todo[take]
            x_out[idx], loss_out[idx], fooled[idx] = xs[take], ls[take], fs[take]
        return x_out

    def config(self) -> dict:
        cfg = super().config()
        cfg.update(steps=self.steps, loss=self.loss, restarts=self.restarts, rho=self.rho)
        if self.eot_iter > 1:
            cfg["eot_iter"] = self.eot_iter
        return cfg


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """AutoAttack's targeted DLR, per sample: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``; >= 4 classes."""
    if logits.shape[-1] < 4:
        raise ValueError(f"the targeted DLR loss needs at least 4 classes (this task has {logits.shape[-1]})")
    srt = logits.sort(dim=1)[0]
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (srt[:, -1] - 0.5 * (srt[:, -3] + srt[:, -4]) + 1e-12)


@ATTACKS.register("apgd-t", summary="targeted APGD on the DLR loss (Croce & Hein, ICML 2020)")
class APGDT(APGD):
    """``APGDT(eps, steps=10, n_target_classes=9, norm="linf", restarts=1, rho=0.75, eot_iter=1)``: APGD-T
    (module docstring). ``n_target_classes`` is capped at ``num_classes - 1``."""

    name = "apgd-t"
    MIN_CLASSES = 4

    def __init__(self, eps, steps: int = 10, n_target_classes: int = 9, norm: str = "linf", restarts: int = 1,
                 rho: float = 0.75, eot_iter: int = 1, generator=None, dtype=torch.float32):
        super().__init__(eps, steps=steps, norm=norm, loss="dlr", restarts=restarts, rho=rho, eot_iter=eot_iter,
                         generator=generator, dtype=dtype)
        if n_target_classes < 1:
            raise ValueError("n_target_classes must be >= 1")
        self.n_target_classes = int(n_target_classes)
        self.name = "apgd-t"

    def __call__(self, classifier, x, y, generator=None):
        n = getattr(classifier, "num_classes", None)
        if n is not None and int(n) < self.MIN_CLASSES:
            raise ValueError(f"APGD-T's targeted DLR loss needs at least {self.MIN_CLASSES} classes (this task "
                             f"has {int(n)}); use APGD-CE for tasks with fewer classes")
        self._draw = 0
        return Attack.__call__(self, classifier, x, y, generator)

    def loss_per_sample(self, logits, y, target=None):
        return targeted_dlr_loss(logits.float(), y, target)

    def perturb(self, classifier, x, y, generator):
        with torch.no_grad():
            logits, copies = self._logits(classifier, x, generator)
            logits = logits.view(copies, len(y), -1).mean(0)
        order = logits.argsort(dim=1, descending=True)
        n_t = min(self.n_target_classes, logits.shape[-1] - 1)
        x_out = x.clone()
        loss_out = torch.full((len(y),), -math.inf, device=x.device)
        fooled = torch.zeros(len(y), dtype=torch.bool, device=x.device)
        for t in range(1, n_t + 1):
            for r in range(self.restarts):
                todo = (~fooled).nonzero().flatten()
                if todo.numel() == 0:
                    return x_out
                with progress.part((t - 1) * self.restarts + r, n_t * self.restarts):
                    xs, ls, fs = self._run(classifier, x[todo], y[todo], rng.subset(generator, todo),
                                           target=order[todo, t])
                # a fooled point always wins; otherwise the latest target's best point (its loss scale differs
                # from the previous target's, so losses are not compared across targets)
                x_out[todo], loss_out[todo], fooled[todo] = xs, ls, fs
        return x_out

    def config(self) -> dict:
        cfg = super().config()
        cfg.update(name="apgd-t", loss="dlr-targeted", n_target_classes=self.n_target_classes)
        return cfg
