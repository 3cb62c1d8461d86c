"""Shared loop of the gradient-based purification baselines (Anti-adversary, Hedge Defence): a few signed
gradient steps on a loss of the classifier's own output, kept in an L∞ ball and in [0,1]."""

from __future__ import annotations

import torch

from .. import ball
from ..budgets import parse_eps
from ._grad import identity_st, input_grad_graph, second_order, sign_st
from .base import Defense


class SignStepDefense(Defense):
    dynamic = True
    per_sample_generators = True  # draws through counterclip.rng (batch-size invariant)
    differentiable_modes = ("full", "bpda")
    budget_bound = True  # x + delta, delta kept in the L-inf ball of eps
    direction = 1.0  # +1 ascends the objective, -1 descends it

    def __init__(self, eps=4 / 255, steps: int = 2, step_size=1 / 255):
        self.eps, self.step_size, self.steps = parse_eps(eps), parse_eps(step_size, "step_size"), int(steps)

    def start(self, x: torch.Tensor, generator) -> torch.Tensor:
        return torch.zeros_like(x)

    def context(self, classifier, x: torch.Tensor):
        return None

    def objective(self, logits: torch.Tensor, ctx) -> torch.Tensor:
        raise NotImplementedError

    def project(self, delta, x):
        return ball.clip_delta(delta, x, self.eps)

    def purify(self, classifier, x, generator=None) -> torch.Tensor:
        x = x.detach()
        with torch.no_grad():
            ctx = self.context(classifier, x)
        delta = self.start(x, generator)
        for _ in range(self.steps):
            with torch.enable_grad():
                d = delta.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(self.objective(classifier(x + d), ctx), d)
            delta = self.project(delta + self.direction * self.step_size * g.sign(), x).detach()
        return delta

    def predict(self, classifier, x, generator=None):
        return classifier(x + self.purify(classifier, x, generator))

    def differentiable(self, classifier, x, generator=None, mode: str = "full"):
        """mode="full": unrolled steps with a second-order graph; sign and clipping are straight-through
        (``sign_st`` / ``identity_st``); the pseudo-label (Anti-adversary) is a constant. mode="bpda": the
        purification is identity on the backward pass."""
        if mode == "bpda":
            return classifier(x + self.purify(classifier, x, generator))
        if mode != "full":
            raise ValueError(f"unknown differentiable mode {mode!r}; valid: full, bpda")
        with second_order():
            return self._unrolled(classifier, x, generator)

    def _unrolled(self, classifier, x, generator):
        with torch.no_grad():
            ctx = self.context(classifier, x.detach())
        d = self.start(x.detach(), generator)
        for _ in range(self.steps):
            if not d.requires_grad:
                d = d.clone().requires_grad_(True)
            g = input_grad_graph(self.objective(classifier(x + d), ctx), d)
            raw = d + self.direction * self.step_size * sign_st(g)
            d = identity_st(raw, self.project(raw, x))
        return classifier(x + d)

    def params(self) -> dict:
        return {"eps": self.eps, "steps": self.steps, "step_size": self.step_size}
