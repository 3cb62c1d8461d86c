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
    """Mixin: a gate threshold that is a float or ``"auto"``, its quantile, and ``calibrate(encoder, x_clean)``.
    Every gated defense uses it: CSR's and MAC's ``gate_thres`` / ``gate_quantile``, and TTC's ``tau_thres`` /
    ``tau_quantile`` (the same mechanism under the paper's names: ``thres_name``, ``quantile_name``).

    The class supplies ``score_of(encoder, x, generator) -> Tensor[B]`` (no graph needed) and ``gate_purifies``.
    The quantile is the fraction of clean calibration images the calibrated gate purifies: the threshold is the
    ``q`` quantile of clean scores when the defense purifies below it, the ``1 - q`` quantile when above.
    """

    thres_name = "gate_thres"  # how parameters, records and errors name the threshold
    quantile_name = "gate_quantile"
    score_name = "score"  # how the calibration record names the score's statistics

    def _init_gate(self, thres, quantile: float):
        if not 0 <= quantile <= 1:
            raise ValueError(f"{self.quantile_name} must be in [0, 1], got {quantile}")
        self._quantile = float(quantile)
        self.auto = isinstance(thres, str) and thres.lower() == "auto"
        self._thres = None if self.auto else float(thres)
        self.calibration: dict | None = None

    def threshold(self) -> float:
        if self._thres is None:
            raise RuntimeError(f"{self.name}: {self.thres_name}='auto' needs calibration first: "
                               f"{self.name}.calibrate(encoder, x_clean)")
        return self._thres

    @property
    def gate_threshold(self) -> float:
        return self.threshold()

    def gate_score(self, classifier, x, generator=None):
        return self.score_of(classifier.encode_image, x, generator)

    @torch.no_grad()
    def calibrate(self, encoder, x_clean: torch.Tensor, q: float | None = None, batch_size: int = 256,
                  generator=None) -> float:
        """Set the threshold from clean held-out images and return it; ``self.calibration`` says what was
        measured."""
        q = self._quantile if q is None else float(q)
        level = q if self.gate_purifies == "below" else 1 - q
        thr, scores = quantile_threshold(lambda x, g: self.score_of(encoder, x, g), x_clean, level, batch_size,
                                         generator)
        self._thres = thr
        self.calibration = self.calibration_record(q, level, scores, thr)
        return thr

    def calibration_record(self, q: float, level: float, scores: torch.Tensor, thr: float) -> dict:
        return {"q": q, "quantile_level": level, "n": len(scores), self.thres_name: thr,
                f"{self.score_name}_mean": float(scores.mean()), f"{self.score_name}_median": float(scores.median())}

    def gate_params(self) -> dict:
        p = {self.thres_name: "auto" if self.auto and self._thres is None else self._thres}
        if self.auto:
            p[f"{self.thres_name}_mode"] = "auto"
            p[self.quantile_name] = self._quantile
            if self.calibration:
                p["calibration"] = self.calibration
        return p

    # CSR's and MAC's names for the threshold and the quantile
    gate_thres = property(lambda self: self._thres, lambda self, v: setattr(self, "_thres", v))
    gate_quantile = property(lambda self: self._quantile, lambda self, v: setattr(self, "_quantile", float(v)))
