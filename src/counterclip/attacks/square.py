"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): score-based black-box, L∞.

``Square(eps, queries=5000, p_init=0.8, rescale_schedule=False)``, written from the paper's Algorithm 1 (L∞):

* start at a vertex of the ball made of vertical stripes: ``x + eps * s`` with one random sign per (channel,
  column), clipped to [0,1];
* minimise the margin ``z_y - max_{c != y} z_c`` by random search: each iteration picks, per sample, a square
  window of side ``s = round(sqrt(p * h * w))`` (at least 1, at most the image side) at a uniformly random
  position and sets the perturbation in it to ``±eps`` with one random sign per channel (the proposal is
  ``x_best + 2 eps * sign`` in the window, projected onto the ball and [0,1]); the proposal is kept when it
  lowers the margin or misclassifies;
* ``p`` halves on the paper's schedule (iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000, starting from
  ``p_init``); ``rescale_schedule=True`` stretches the schedule to the query budget (as if it were 10 000),
  ``False`` (AutoAttack's setting) keeps it as is;
* a sample stops being queried as soon as it is misclassified; ``queries`` iterations after the initial query.

Only the model's outputs are used (never a gradient): against a model whose gradients are masked it is the
check that catches it (``counterclip.evaluation.sanity``). Randomness: the window position and the signs are
drawn per sample from ``generator`` (per-sample generators make a sample's search independent of the batch;
one difference from the reference code, which draws one window position for the whole batch). Against a
``Defended`` module every query passes seeded generators derived from the attack's own (a randomised defense
gets a fresh, seeded draw per query).
"""

from __future__ import annotations

import math

import torch

from .. import progress, rng
from ..budgets import whole_number
from .base import ATTACKS, Attack

# the paper's schedule: p_init / 2**k after these iterations
_P_STEPS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_selection(p_init: float, it: int, queries: int, rescale: bool) -> float:
    if rescale:
        it = int(it / max(queries, 1) * 10000)
    k = sum(it > t for t in _P_STEPS)
    return p_init / (2 ** k)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{c != y} z_c`` per sample (<= 0: misclassified)."""
    logits = logits.float()
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return z_y - other


@ATTACKS.register("square", summary="Square, black-box random search (Andriushchenko et al., ECCV 2020)")
class Square(Attack):
    name = "square"

    def __init__(self, eps, queries: int = 5000, p_init: float = 0.8, rescale_schedule: bool = False,
                 norm: str = "linf", generator=None, dtype=torch.float32):
        super().__init__(eps, norm, generator, dtype)
        if norm != "linf":
            raise ValueError("Square is implemented for the L-inf norm only")
        whole_number("queries", queries)
        if not 0.0 < p_init <= 1.0:
            raise ValueError(f"p_init must be in (0, 1], got {p_init!r}")
        self.queries, self.p_init, self.rescale_schedule = int(queries), float(p_init), bool(rescale_schedule)
        self._query = 0

    def _margin(self, classifier, x, y, generator) -> torch.Tensor:
        with torch.no_grad():
            if getattr(classifier, "defense", None) is not None:  # a Defended module: seeded draws per query
                from .adaptive import copy_generators

                self._query += 1
                logits = classifier(x, generator=copy_generators(generator, 1, f"square:{self._query}"))
            else:
                logits = classifier(x)
        return margin(logits, y)

    def perturb(self, classifier, x, y, generator):
        self._query = 0
        b, c, h, w = x.shape
        signs = rng.rand((b, c, 1, w), generator, x.device, x.dtype).mul(2).sub(1).sign()
        x_best = (x + self.eps * signs).clamp(0, 1)
        m_best = self._margin(classifier, x_best, y, generator)
        for it in range(self.queries):
            active = (m_best > 0).nonzero().flatten()
            if active.numel() == 0:
                break
            p = p_selection(self.p_init, it, self.queries, self.rescale_schedule)
            s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
            # per active sample: window row, window column, one sign per channel
            u = rng.rand((active.numel(), 2 + c), rng.subset(generator, active), x.device, x.dtype)
            vh = (u[:, 0] * (h - s + 1)).long().clamp(max=h - s)
            vw = (u[:, 1] * (w - s + 1)).long().clamp(max=w - s)
            sign = (u[:, 2:] * 2 - 1).sign()
            rows = torch.arange(h, device=x.device)
            cols = torch.arange(w, device=x.device)
            in_r = (rows[None] >= vh[:, None]) & (rows[None] < vh[:, None] + s)
            in_c = (cols[None] >= vw[:, None]) & (cols[None] < vw[:, None] + s)
            window = (in_r[:, :, None] & in_c[:, None, :])[:, None].to(x.dtype)  # [n, 1, h, w]
            xa, xb = x[active], x_best[active]
            x_new = self.project(xb + window * (2 * self.eps) * sign[:, :, None, None], xa)
            m_new = self._margin(classifier, x_new, y[active], rng.subset(generator, active))
            take = (m_new < m_best[active]) | (m_new <= 0)
            idx = active[take]
            x_best[idx] = x_new[take]
            m_best[idx] = m_new[take]
            progress.advance(it + 1, self.queries)
        return x_best

    def config(self) -> dict:
        cfg = super().config()
        cfg.update(steps=self.queries, queries=self.queries, p_init=self.p_init,
                   rescale_schedule=self.rescale_schedule, loss="margin")
        return cfg
