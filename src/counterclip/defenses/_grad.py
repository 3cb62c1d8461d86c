"""Straight-through (BPDA) pieces shared by the differentiable modes of gradient-based defenses."""

from __future__ import annotations

from contextlib import contextmanager

import torch


def sign_st(g: torch.Tensor) -> torch.Tensor:
    """``sign(g)`` forward; backward passes the gradient of ``tanh(g / mean|g|)`` (per sample), a scale-free,
    saturating surrogate (sign's own derivative is zero almost everywhere).

    The surrogate saturates like sign does: entries with |g| well above the mean are (nearly) settled and pass
    (nearly) no gradient. A linear surrogate ``g / mean|g|`` passes ``1/mean|g|`` for every entry, which made
    the unrolled second-order term several times larger than the direct (identity) path and turned the full
    gradient into mostly noise: measured on tiny-fmnist (32 images, eps 8/255, EOT-PGD 5 steps), TTC kept
    23/32 correct under the linear surrogate vs 9/32 with this one (10/32 with BPDA-identity), and
    Anti-adversary / Hedge 10-11/32 vs 5-6/32."""
    scale = g.detach().abs().flatten(1).mean(1).clamp_min(1e-20).view(-1, *([1] * (g.ndim - 1)))
    surrogate = torch.tanh(g / scale)
    return surrogate + (g.sign() - surrogate).detach()


def identity_st(raw: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
    """The value of ``projected`` (a clipping of ``raw``) with the gradient of ``raw`` (BPDA-identity)."""
    return raw + (projected - raw).detach()


def input_grad_graph(loss: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """d loss / d d, keeping the graph for a second-order pass (the outer attack differentiates through it)."""
    return torch.autograd.grad(loss, d, create_graph=True)[0]


@contextmanager
def second_order():
    """Run attention through the math SDPA backend: PyTorch's fused CPU attention kernels have no
    double-backward, and a second-order pass through the ViT needs one. The kernel is chosen at forward time,
    so only the forward needs this context."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield
