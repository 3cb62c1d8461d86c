"""A literal transcription of TTC (spec section 2, steps 1-6) that runs every step for every image, as the
reference code does. It is the yardstick for tests (same delta0 -> same perturbation) and for the throughput
benchmark; use ``TTC`` for real work."""

from __future__ import annotations

import torch


def reference_counterattack(encoder, x, delta0, eps, steps, step_size, tau_thres, beta, norm="linf",
                            tau_encoder=None):
    """Return ``(Delta, tau)`` exactly as the spec states them."""
    tau_enc = tau_encoder or encoder
    with torch.no_grad():
        a = encoder(x).float()
        a_t = tau_enc(x).float()
        tau = (tau_enc(x + delta0).float() - a_t).norm(dim=-1) / a_t.norm(dim=-1)
    deltas = [delta0]
    d = delta0
    for _ in range(steps):
        d = d.detach().clone().requires_grad_(True)
        loss = (encoder(x + d).float() - a).pow(2).sum()
        (g,) = torch.autograd.grad(loss, d)
        with torch.no_grad():
            if norm == "linf":
                d = torch.clamp(d + step_size * g.sign(), -eps, eps)
            else:
                gn = g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                d = d + step_size * g / (gn + 1e-10)
                dn = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                d = d * torch.clamp(eps / dn.clamp_min(1e-12), max=1.0)
            d = torch.clamp(x + d, 0, 1) - x
        deltas.append(d.detach())
    w = torch.softmax(beta * torch.arange(steps + 1, dtype=torch.float64), 0).float()
    weighted = sum(w[i] * deltas[i] for i in range(steps + 1))
    gate = (tau < tau_thres).view(-1, 1, 1, 1)
    return torch.where(gate, weighted, delta0), tau


def reference_ttc_logits(classifier, x, delta0, **kw):
    delta, tau = reference_counterattack(classifier.encode_image, x, delta0, **kw)
    with torch.no_grad():
        return classifier.logits_from_embeddings(classifier.encode_image(x + delta)), tau
