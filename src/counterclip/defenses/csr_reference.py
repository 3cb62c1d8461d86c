"""A literal transcription of CSR (``../shared/spec/peers.md``, CSR steps 1-3), pass for pass as the method
states it: separate forwards for ``f(x)`` and ``f(x_low)``, a forward+backward per update, the last iterate
scored by its own forward, and a fresh forward to classify the chosen iterate. The yardstick for tests (same
inputs -> same outputs) and for the benchmark; use ``CSR`` for real work."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def reference_low_pass(x, radius):
    out = torch.empty_like(x)
    n_h, n_w = x.shape[-2], x.shape[-1]
    mask = torch.zeros(n_h, n_w)
    for i in range(n_h):
        for j in range(n_w):
            dist2 = (i - n_h // 2) ** 2 + (j - n_w // 2) ** 2
            mask[i, j] = math.exp(-dist2 / (2 * radius * radius))
    for c in range(x.shape[1]):
        spectrum = torch.fft.fftshift(torch.fft.fft2(x[:, c]), dim=(-2, -1))
        filtered = torch.fft.ifftshift(spectrum * mask.to(x.device), dim=(-2, -1))
        out[:, c] = torch.fft.ifft2(filtered).real
    return torch.clamp(out, 0, 1)


def reference_csr_logits(classifier, x, updates=2, eps=4 / 255, step_size=2 / 255, lam=1.0, gate_thres=0.85,
                         radius=None):
    """``(logits, flagged)``; ``updates`` = 2 (fast) or 3 (full)."""
    if radius is None:
        radius = 40.0 * x.shape[-1] / 224.0
    f = classifier.encode_image
    with torch.no_grad():
        a = f(x).float()
        b = f(reference_low_pass(x, radius)).float()
    cos_ab = F.cosine_similarity(a, b, dim=-1)
    flagged = cos_ab < gate_thres
    with torch.no_grad():
        logits = classifier.logits_from_embeddings(a)
    if not flagged.any():
        return logits, flagged
    x0, a0, b0 = x[flagged], a[flagged], b[flagged]
    cur = x0.clone()
    best = x0.clone()
    best_score = torch.full((len(x0),), -float("inf"))
    for k in range(updates + 1):
        cur = cur.detach().clone().requires_grad_(True)
        e = f(cur).float()
        score = F.cosine_similarity(e, b0, dim=-1) - lam * F.cosine_similarity(e, a0, dim=-1)
        better = score.detach() > best_score
        best[better] = cur.detach()[better]
        best_score[better] = score.detach()[better]
        if k == updates:
            break
        (g,) = torch.autograd.grad(score.sum(), cur)
        with torch.no_grad():
            nxt = cur + step_size * g.sign()
            nxt = torch.min(torch.max(nxt, x0 - eps), x0 + eps)
            cur = torch.clamp(nxt, 0, 1)
    with torch.no_grad():
        logits[flagged] = classifier(best)
    return logits, flagged
