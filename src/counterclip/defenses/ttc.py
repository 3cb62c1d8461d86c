"""TTC: test-time counterattacks (Xing, Zhao & Sebe, *CLIP is Strong Enough to Fight Back*, CVPR 2025).

An adversarial image sits where CLIP's image embedding hardly moves under small random noise ("false
stability"). TTC measures that sensitivity, ``tau = ||f(x+delta0) - f(x)|| / ||f(x)||``, and for images with
``tau < tau_thres`` "counterattacks": a few signed-gradient steps that push the embedding *away* from ``f(x)``,
using only the image encoder (no labels, no text). The final perturbation is a softmax(beta * i) weighted sum
of the perturbations delta0..deltaN; images with ``tau >= tau_thres`` keep ``delta0``. Algorithm: spec section 2.

Unlike the reference code, gated images get no counterattack steps and their ``f(x+delta0)`` (already computed
for tau) is their final embedding, so a gated image costs two forwards. When a batch is expected to be mostly
counterattacked (from the previous batches' gate rate, or ``tau_thres = inf``), the ``f(x+delta0)`` pass is run
with autograd recording and reused as the first step's forward; otherwise it runs without a graph and only
the counterattacked images are re-encoded. Both paths give the same perturbation.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .. import ball
from ..budgets import parse_eps, whole_number
from ._gate import CalibratedGate
from ._grad import identity_st, input_grad_graph, second_order, sign_st
from .base import DEFENSES, Defense

# record the graph on the delta0 pass when more than this fraction of the batch is expected to be
# counterattacked: one forward+backward on B images beats a no-grad forward on B plus forward+backward on k
# once k > 2B/3 (backward ~ 2 forwards)
_RECORD_FRACTION = 2 / 3


@dataclass
class TTCOutput:
    logits: torch.Tensor
    tau: torch.Tensor  # per image
    counterattacked: torch.Tensor  # bool per image: tau < tau_thres and steps > 0
    delta: torch.Tensor


def step_weights(steps: int, beta: float) -> torch.Tensor:
    """``w_i = exp(beta*i) / sum_j exp(beta*j)``, i = 0..steps (weights over perturbations, not embeddings)."""
    return torch.softmax(beta * torch.arange(steps + 1, dtype=torch.float64), 0).float()


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


@DEFENSES.register("ttc", summary="TTC, test-time counterattacks (Xing, Zhao & Sebe, CVPR 2025)")
class TTC(CalibratedGate, Defense):
    """``TTC(eps=4/255, steps=2, step_size=1/255, tau_thres=0.2, beta=2.0, norm="linf", tau_encoder=None)``.

    eps: the counterattack budget (``eps_ttc`` in the paper, ``--ttc-eps`` on the CLI); floats or "4/255".
    steps: counterattack steps N; ``steps=0`` is the RN (random noise) baseline.
    tau_thres: the gate; a float, ``float("inf")`` (counterattack everything) or ``"auto"``: the
      ``tau_quantile`` quantile of tau over clean calibration images, set by ``calibrate`` (0.2 was tuned for
      ViT-B/32; tau's scale depends on the model).
    tau_encoder: for adversarially finetuned models, tau comes from the original CLIP encoder (spec section 2)
      while the anchor, the counterattack and the classification use the finetuned one.
    precision: "fp32" (default) or an opt-in "bf16"/"fp16" autocast for the defense's encoder passes.
    """

    name = "ttc"
    per_sample_generators = True  # draws through counterclip.rng (batch-size invariant)
    randomized = True
    dynamic = True
    differentiable_modes = ("full", "bpda")
    budget_bound = True  # x + delta with delta in the eps-ball (RN too)
    gradient_choices = {
        "full": "through the counterattack, second order; sign -> tanh surrogate (sign_st), clipping "
                "straight-through, the tau gate a constant mask; EOT over delta0",
        "bpda": "the counterattack is identity on the backward pass; EOT over delta0"}

    def __init__(self, eps=4 / 255, steps: int = 2, step_size=1 / 255, tau_thres=0.2, beta: float = 2.0,
                 norm: str = "linf", tau_encoder=None, tau_quantile: float = 0.1, precision: str = "fp32"):
        if norm not in ("linf", "l2"):
            raise ValueError(f"unknown norm {norm!r}; valid: linf, l2")
        self.eps = parse_eps(eps, norm=norm)
        self.step_size = parse_eps(step_size, "step_size", norm)
        self.steps = whole_number("steps", steps)
        self.beta = float(beta)
        self.norm = norm
        self.tau_encoder = tau_encoder
        self._init_gate(tau_thres, tau_quantile)  # the shared calibrated gate, under the paper's names
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"unknown precision {precision!r}; valid: fp32, bf16, fp16")
        self.precision = precision
        self._attack_rate: float | None = None  # running gate rate, picks the record/no-record path
        self.last_path = None

    # -- the algorithm's pieces ------------------------------------------------------------------------------
    @property
    def weights(self) -> torch.Tensor:
        return step_weights(self.steps, self.beta)

    def random_start(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """delta0 (spec step 1, and the L2 variant), clipped so that x + delta0 is in [0,1]."""
        return ball.start_delta(x, self.eps, generator, self.norm)

    def project(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return ball.clip_delta(delta, x, self.eps, self.norm)

    def ascent(self, delta: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return delta + self.step_size * grad.sign()
        return delta + self.step_size * grad / (_per_sample_norm(grad) + 1e-10)

    def _autocast(self, x: torch.Tensor):
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=x.device.type, dtype=dtype)

    def _encode(self, encoder, x):
        with self._autocast(x):
            return encoder(x).float()

    # -- the gate, as attacks read it (Defense's self-description) -------------------------------------------
    thres_name, quantile_name, score_name = "tau_thres", "tau_quantile", "tau"
    tau_thres = property(lambda self: self._thres, lambda self, v: setattr(self, "_thres", v))
    tau_quantile = property(lambda self: self._quantile, lambda self, v: setattr(self, "_quantile", float(v)))
    gate_purifies = "below"  # tau < tau_thres -> counterattacked
    gate_name = "tau"  # its gate-aware attack is recorded as "tau-aware"
    gate_label = "tau"

    @property
    def gate_threshold(self):
        """tau_thres (None for RN, which has no gate; raises for an uncalibrated "auto")."""
        return None if self.steps == 0 else self.threshold()

    def gate_score(self, classifier, x, generator=None):
        return self.gate_terms(classifier, x, generator)[1]

    def gate_terms(self, classifier, x, generator=None):
        """(logits of ``x + delta0``, tau) with one delta0 draw; both differentiable in ``x``. A gated image's
        output is exactly those logits; the embedding is shared with tau's unless a separate tau encoder is set."""
        d0 = self.random_start(x.detach(), generator).detach()
        enc = classifier.encode_image
        tau_enc = self.tau_encoder or enc
        e0 = tau_enc(x + d0).float()
        e_cls = enc(x + d0).float() if self.tau_encoder is not None else e0
        a = tau_enc(x).float()
        return classifier.logits_from_embeddings(e_cls), (e0 - a).norm(dim=-1) / a.norm(dim=-1)

    # -- calibration -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def tau_of(self, encoder, x: torch.Tensor, delta0: torch.Tensor | None = None, generator=None) -> torch.Tensor:
        """tau per image (spec step 3), with the tau encoder when one is set."""
        enc = self.tau_encoder or encoder
        if delta0 is None:
            delta0 = self.random_start(x, generator)
        a = self._encode(enc, x)
        return (self._encode(enc, x + delta0) - a).norm(dim=-1) / a.norm(dim=-1)

    def score_of(self, encoder, x, generator=None):
        return self.tau_of(encoder, x, generator=generator)

    def calibration_record(self, q, level, scores, thr) -> dict:  # TTC's records have said it this way
        return {"q": q, "n": len(scores), "tau_thres": thr, "tau_mean": float(scores.mean()),
                "tau_median": float(scores.median())}

    # -- the counterattack -----------------------------------------------------------------------------------
    def counterattack(self, encoder, x: torch.Tensor, delta0: torch.Tensor | None = None, generator=None):
        """``(delta, tau)``: the final perturbation Δ (spec steps 1-6) and tau per image.

        ``encoder`` maps [0,1] pixels to unnormalised embeddings (e.g. ``model.encode_image``); ``delta0``
        fixes the random start."""
        delta, tau, _, _ = self._run(encoder, x, delta0, generator, want_embedding=False)
        return delta, tau

    def _expected_attack_rate(self, thr: float) -> float | None:
        if self.steps == 0 or thr <= 0:
            return 0.0
        if math.isinf(thr):
            return 1.0
        return self._attack_rate

    def _run(self, encoder, x, delta0, generator, want_embedding: bool):
        thr = self.threshold()
        x = x.detach()
        if delta0 is None:
            delta0 = self.random_start(x, generator)
        delta0 = delta0.detach().to(x.dtype)
        separate = self.tau_encoder is not None
        tau_enc = self.tau_encoder or encoder
        rate = self._expected_attack_rate(thr)
        record = (not separate) and self.steps > 0 and rate is not None and rate > _RECORD_FRACTION
        self.last_path = "record" if record else "no-grad"

        with torch.no_grad():
            a_tau = self._encode(tau_enc, x)
        d_req = None
        with torch.enable_grad() if record else torch.no_grad():
            if record:
                d_req = delta0.detach().requires_grad_(True)  # an alias: nothing writes to it, no copy needed
            e0 = self._encode(tau_enc, x + (d_req if record else delta0))
        tau = (e0.detach() - a_tau).norm(dim=-1) / a_tau.norm(dim=-1)
        gate = (tau < thr) if self.steps > 0 else torch.zeros_like(tau, dtype=torch.bool)
        if self.steps > 0 and 0 < thr and not math.isinf(thr):
            frac = float(gate.float().mean())
            self._attack_rate = frac if self._attack_rate is None else 0.5 * self._attack_rate + 0.5 * frac

        # every image counterattacked: work on the batch itself, without sub-batch copies of x, delta0, the
        # gradient and the embeddings (with the two alias-instead-of-clone changes, this took the peak memory
        # of a fully counterattacked batch down ~7 %, to the reference's)
        full = len(x) > 0 and bool(gate.all())
        idx = None if full else gate.nonzero().flatten()
        sub = (lambda t: t) if full else (lambda t: t[idx])
        any_attacked = full or len(idx) > 0
        delta, e_final = None, None
        if any_attacked:
            xs = sub(x)
            with torch.no_grad():
                anchor = self._encode(encoder, xs) if separate else sub(a_tau)
            w = self.weights.to(x.device, x.dtype)
            d_prev = sub(delta0)  # never written to in place
            acc = w[0] * d_prev
            for i in range(1, self.steps + 1):
                with torch.enable_grad():
                    if i == 1 and record:  # reuse the recorded f(x + delta0) pass
                        loss = (sub(e0) - anchor).pow(2).sum()
                        grad = sub(torch.autograd.grad(loss, d_req)[0])
                    else:
                        d_in = d_prev.detach().requires_grad_(True)  # an alias, as above
                        loss = (self._encode(encoder, xs + d_in) - anchor).pow(2).sum()
                        grad = torch.autograd.grad(loss, d_in)[0]
                d_prev = self.project(self.ascent(d_prev, grad), xs).detach()
                acc = acc + w[i] * d_prev
            if full:
                delta = acc
            else:
                delta = delta0.clone()
                delta[idx] = acc
            if want_embedding:
                with torch.no_grad():
                    e_final = self._encode(encoder, xs + acc)
        else:
            delta = delta0.clone()
        emb = None
        if want_embedding:
            if full and e_final is not None:
                emb = e_final
            elif separate:  # gated images need f(x + delta0) from the finetuned encoder: the spec's third forward
                keep = ~gate
                with torch.no_grad():
                    e_keep = self._encode(encoder, x[keep] + delta0[keep])
                emb = torch.empty(len(x), e_keep.shape[-1], device=x.device)
                emb[keep] = e_keep
            else:
                emb = e0.detach().clone()
            if e_final is not None and emb is not e_final:
                emb[idx] = e_final
        return delta.detach(), tau, gate, emb

    # -- the defense calls -----------------------------------------------------------------------------------
    def defend(self, classifier, x: torch.Tensor, generator=None, delta0=None) -> TTCOutput:
        delta, tau, gate, emb = self._run(classifier.encode_image, x, delta0, generator, want_embedding=True)
        with torch.no_grad():
            logits = classifier.logits_from_embeddings(emb)
        return TTCOutput(logits, tau, gate, delta)

    def predict(self, classifier, x, generator=None):
        return self.defend(classifier, x, generator).logits

    def differentiable(self, classifier, x, generator=None, mode: str = "full", delta0=None):
        """Defended logits with a graph to ``x``, for attacks that target TTC.

        mode="full": differentiate through the counterattack. The anchor f(x) and every step keep their graph
        (second order through the encoder, ``create_graph=True``; run under the math SDPA backend on CPU);
        straight-through (BPDA) estimates replace the parts with no useful derivative: ``sign(g)`` passes the
        gradient of ``tanh(g / mean|g|)`` (``_grad.sign_st``), the eps-ball and [0,1] clipping pass it
        unchanged, and the tau gate is a constant mask. delta0 is drawn without a graph (EOT averages over it).
        mode="bpda": the counterattack is identity on the backward pass: logits(x + Δ) with Δ detached.
        """
        if mode == "bpda":
            delta, _ = self.counterattack(classifier.encode_image, x, delta0, generator)
            return classifier(x + delta)
        if mode != "full":
            raise ValueError(f"unknown differentiable mode {mode!r}; valid: full, bpda")
        with second_order():
            return self._unrolled(classifier, x, generator, delta0)

    def _unrolled(self, classifier, x, generator, delta0):
        thr = self.threshold()
        if delta0 is None:
            delta0 = self.random_start(x.detach(), generator)
        encoder = classifier.encode_image
        tau_enc = self.tau_encoder or encoder
        with torch.no_grad():
            a_t = tau_enc(x.detach()).float()
            tau = (tau_enc(x.detach() + delta0).float() - a_t).norm(dim=-1) / a_t.norm(dim=-1)
        gate = (tau < thr).view(-1, *([1] * (x.ndim - 1))).to(x.dtype) if self.steps > 0 else None
        if gate is None or not gate.any():
            return classifier(x + delta0)
        anchor = encoder(x).float()
        w = self.weights.to(x.device, x.dtype)
        d = delta0
        acc = w[0] * d
        for i in range(1, self.steps + 1):
            if not d.requires_grad:
                d = d.clone().requires_grad_(True)
            g = input_grad_graph((encoder(x + d).float() - anchor).pow(2).sum(), d)
            step = sign_st(g) if self.norm == "linf" else g / (_per_sample_norm(g) + 1e-10)
            raw = d + self.step_size * step
            d = identity_st(raw, self.project(raw, x))
            acc = acc + w[i] * d
        final = gate * acc + (1 - gate) * delta0
        return classifier(x + final)

    def params(self) -> dict:
        return {"eps": self.eps, "steps": self.steps, "step_size": self.step_size, "beta": self.beta,
                "norm": self.norm, "precision": self.precision, "separate_tau_encoder": self.tau_encoder is not None,
                **self.gate_params()}
