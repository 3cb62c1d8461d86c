"""A gate threshold that is a number or ``"auto"``: calibrated on clean held-out images as a quantile of the
gate score, as TTC's ``tau_thres="auto"`` does. A paper's threshold is tuned for its backbone (CSR's 0.85 and
MAC's 0.7 for ViT-B; TTC's 0.2 for ViT-B/32); on another model the score lives on another scale."""

from __future__ import annotations

import torch

from .. import rng


@torch.no_grad()
def quantile_threshold(score_of, x_clean: torch.Tensor, level: float, batch_size: int = 256, generator=None):
    """``(threshold, scores)``: ``score_of(x_batch, generator)`` over clean images in batches (per-sample
    generators follow their images), and the ``level`` quantile of the scores. TTC's tau_thres="auto" and every
    CalibratedGate calibrate this way."""
    per_sample = generator is not None and not isinstance(generator, torch.Generator)
    scores = torch.cat([score_of(x_clean[i:i + batch_size],
                                 rng.subset(generator, range(i, min(i + batch_size, len(x_clean))))
                                 if per_sample else generator).float().cpu()
                        for i in range(0, len(x_clean), batch_size)])
    return float(torch.quantile(scores.double(), level)), scores


class CalibratedGate:
    """Mixin: ``gate_thres`` (float or "auto"), ``gate_quantile``, ``calibrate(encoder, x_clean)``.

    The class supplies ``score_of(encoder, x, generator) -> Tensor[B]`` (no graph needed) and ``gate_purifies``.
    ``gate_quantile`` is the fraction of clean calibration images the calibrated gate purifies: the threshold
    is the ``q`` quantile of clean scores when the defense purifies below it, the ``1 - q`` quantile when above.
    """

    def _init_gate(self, gate_thres, gate_quantile: float):
        if not 0 <= gate_quantile <= 1:
            raise ValueError(f"gate_quantile must be in [0, 1], got {gate_quantile}")
        self.gate_quantile = float(gate_quantile)
        self.auto = isinstance(gate_thres, str) and gate_thres.lower() == "auto"
        self.gate_thres = None if self.auto else float(gate_thres)
        self.calibration: dict | None = None

    @property
    def gate_threshold(self) -> float:
        if self.gate_thres is None:
            raise RuntimeError(f"{self.name}: gate_thres='auto' needs calibration first: "
                               f"{self.name}.calibrate(encoder, x_clean)")
        return self.gate_thres

    def gate_score(self, classifier, x, generator=None):
        return self.score_of(classifier.encode_image, x, generator)

    @torch.no_grad()
    def calibrate(self, encoder, x_clean: torch.Tensor, q: float | None = None, batch_size: int = 256,
                  generator=None) -> float:
        """Set ``gate_thres`` from clean held-out images and return it; ``self.calibration`` says what was
        measured."""
        q = self.gate_quantile if q is None else float(q)
        level = q if self.gate_purifies == "below" else 1 - q
        thr, scores = quantile_threshold(lambda x, g: self.score_of(encoder, x, g), x_clean, level, batch_size,
                                         generator)
        self.gate_thres = thr
        self.calibration = {"q": q, "quantile_level": level, "n": len(scores), "gate_thres": thr,
                            "score_mean": float(scores.mean()), "score_median": float(scores.median())}
        return thr

    def gate_params(self) -> dict:
        p = {"gate_thres": "auto" if self.auto and self.gate_thres is None else self.gate_thres}
        if self.auto:
            p["gate_thres_mode"] = "auto"
            p["gate_quantile"] = self.gate_quantile
            if self.calibration:
                p["calibration"] = self.calibration
        return p
