"""A literal transcription of MAC (``../shared/spec/peers.md``, MAC steps 1-4) with the reference pass pattern:
every view gets its anchor forward, its corruption-degree forward, 4 forward+backward counterattack steps and a
final forward, whatever its weight (about 14 forwards + 8 backwards per image with 2 views). It draws its
randomness through ``MAC``'s own draw functions, in the same order, so the same generator gives the same views,
augmentations and delta0. The yardstick for tests and the benchmark; use ``MAC`` for real work."""

from __future__ import annotations

import torch


def reference_mac_logits(mac, classifier, x, generator=None):
    """``(logits, w)`` for ``mac`` (a ``MAC``: its parameters and draw functions)."""
    f = classifier.encode_image
    v = mac.views(x, generator)
    gv = mac._view_gens(generator, mac.n_views)
    with torch.no_grad():
        anchor = f(v).float()
        v_aug = mac.augment(v, gv)
        shifted = f(v_aug).float()
        degree = (shifted - anchor).norm(dim=-1) / anchor.norm(dim=-1)
        w = torch.sigmoid((degree - mac.gate_threshold) / mac.temperature)
        delta = mac.random_start(v, gv)
    for _ in range(mac.steps):
        delta = delta.detach().clone().requires_grad_(True)
        loss = (f(v + delta).float() - anchor).pow(2).sum()
        (g,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = torch.clamp(delta + mac.step_size * g.sign(), -mac.eps, mac.eps)
            delta = torch.clamp(v + delta, 0, 1) - v
    with torch.no_grad():
        final = delta * w.view(-1, 1, 1, 1)
        logits = classifier(v + final)
    return logits.view(mac.n_views, len(x), -1).mean(0), w.view(mac.n_views, len(x))
