"""The three fine-tuning methods (spec sections 2-4), each as a per-sample attack loss and a training loss, and
the one table that names them (``METHODS``, ``resolve_method``): the CLI's choices and its errors come from it.

A method sees the run through ``Context`` (``trainer.py``): ``ctx.embed(tower, x)`` is ``tower(P(x))`` in fp32,
``ctx.logits(e)`` the zero-shot logits against the fixed text embeddings, ``ctx.f0`` the frozen original tower.
The training loss takes ``forward``, the (possibly DDP-wrapped) trainable tower, and calls it exactly once: a
branch on clean images rides in the same batch as the adversarial one (ViTs do not mix samples), since DDP
allows one forward per backward without ``find_unused_parameters``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import CounterclipError, UnknownNameError
from ..registry import Registry


def _kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p || q) from log-probabilities."""
    return (p_log.exp() * (p_log - q_log)).sum(-1)


def _forward_pair(ctx, forward, first: torch.Tensor, second: torch.Tensor | None):
    if second is None:
        return ctx.embed(forward, first), None
    both = ctx.embed(forward, torch.cat([first, second]))
    return both[: len(first)], both[len(first):]


class Method:
    name = ""
    checkpoint_name = ""
    uses_labels = True
    normalisation = "clip"

    def __init__(self, reference: bool = False):
        self.reference = bool(reference)

    # the training attack's knobs that the method fixes
    def attack_options(self) -> dict:
        return {"reduction": "sum", "leak": False, "clip_start": True}

    @property
    def logit_scale_one(self) -> bool:  # PMG-AFT official trains on raw cosines
        return False

    def batch_state(self, ctx, tower, x, y) -> dict:
        return {}

    def attack_loss(self, ctx, tower, x_adv, x, y, state) -> torch.Tensor:
        return F.cross_entropy(ctx.logits(ctx.embed(tower, x_adv)), y, reduction="none")

    def train_loss(self, ctx, forward, x_adv, x, y, state):
        raise NotImplementedError

    def config(self) -> dict:
        return {"method": self.name, "reference": self.reference}


# the one place methods are named; aliases are the spellings papers and checkpoint files use
METHODS: Registry = Registry("finetune method", base=Method, plugins=False)


@METHODS.register("tecoa", summary="TeCoA: adversarial CE against the class text embeddings (Mao et al., ICLR 2023)")
class TeCoA(Method):
    """Adversarial CE against the class text embeddings; no clean term."""

    name, checkpoint_name = "tecoa", "TeCoA"

    def attack_options(self) -> dict:
        if self.reference:  # batch-mean CE whose parameter gradients stay in .grad (and fp16 on a GPU)
            return {"reduction": "mean", "leak": True, "clip_start": True, "fp16": True}
        return super().attack_options()

    def train_loss(self, ctx, forward, x_adv, x, y, state):
        loss = F.cross_entropy(ctx.logits(ctx.embed(forward, x_adv)), y)
        return loss, {"ce": loss.item()}


KL_DIRECTIONS = ("student-first", "target-first")
PMG_VARIANTS = ("ttc", "official")


@METHODS.register("pmg-aft", "pmg", "pmg_aft", "pmgaft",
                  summary="PMG-AFT: TeCoA plus KL terms to the original model and to clean inputs (Wang et al., CVPR 2024)")
class PMGAFT(Method):
    """Robust CE plus a KL to the frozen tower's prediction on x_adv and a KL to the trained tower's own clean
    prediction; the variant fixes the temperature, normalisation, reduction and KL direction (spec section 3)."""

    name, checkpoint_name = "pmg-aft", "PMG_AFT"

    def __init__(self, reference: bool = False, variant: str = "ttc", kl_direction: str | None = None,
                 lambda_g: float = 1.0, lambda_c: float = 1.0):
        super().__init__(reference)
        if variant not in PMG_VARIANTS:
            raise UnknownNameError("PMG-AFT variant", variant, PMG_VARIANTS)
        if reference and variant == "ttc":
            variant = "official"  # --reference means the reference code's quirks, which are the official variant
        self.variant = variant
        self.kl_direction = kl_direction or ("target-first" if variant == "official" else "student-first")
        if self.kl_direction not in KL_DIRECTIONS:
            raise UnknownNameError("KL direction", self.kl_direction, KL_DIRECTIONS)
        self.lambda_g, self.lambda_c = float(lambda_g), float(lambda_c)
        self.normalisation = "imagenet" if variant == "official" else "clip"

    @property
    def logit_scale_one(self) -> bool:
        return self.variant == "official"

    def attack_options(self) -> dict:
        if self.variant == "official":
            return {"reduction": "mean", "leak": True, "clip_start": True, "fp16": True}
        return super().attack_options()

    def train_loss(self, ctx, forward, x_adv, x, y, state):
        e_adv, e_clean = _forward_pair(ctx, forward, x_adv, x)
        z_adv, z_clean = ctx.logits(e_adv), ctx.logits(e_clean)
        with torch.no_grad():
            z0_adv = ctx.logits(ctx.embed(ctx.f0, x_adv))
        lp_adv, lp_clean, lp0 = (F.log_softmax(z, -1) for z in (z_adv, z_clean, z0_adv))
        if self.kl_direction == "student-first":
            kl_g, kl_c = _kl(lp_adv, lp0), _kl(lp_adv, lp_clean)
        else:
            kl_g, kl_c = _kl(lp0, lp_adv), _kl(lp_clean, lp_adv)
        ce = F.cross_entropy(z_adv, y)
        if self.variant == "official":
            # batch-sum KL; times the world size so that DDP's mean over ranks gives the global batch's sum
            g, c = kl_g.sum() * ctx.world, kl_c.sum() * ctx.world
        else:
            g, c = self.lambda_g * kl_g.mean(), self.lambda_c * kl_c.mean()
        loss = ce + g + c
        return loss, {"ce": ce.item(), "kl_g": g.item(), "kl_c": c.item()}

    def config(self) -> dict:
        return {**super().config(), "variant": self.variant, "kl_direction": self.kl_direction,
                "lambda_g": self.lambda_g, "lambda_c": self.lambda_c}


@METHODS.register("fare", summary="FARE: unsupervised, keeps adversarial embeddings near the original clean ones (Schlarmann et al., ICML 2024)")
class FARE(Method):
    """Unsupervised: keep the adversarial embedding near the original tower's clean embedding (squared L2,
    unnormalised, summed over dimensions); no labels, no text."""

    name, checkpoint_name = "fare", "FARE"
    uses_labels = False

    def __init__(self, reference: bool = False, clean_weight: float = 0.0, trades: bool = False):
        super().__init__(reference)
        if not 0.0 <= float(clean_weight) <= 1.0:
            raise CounterclipError(f"--clean-weight must lie in [0, 1], got {clean_weight}")
        self.clean_weight, self.trades = float(clean_weight), bool(trades)

    def attack_options(self) -> dict:
        return {"reduction": "sum", "leak": False, "clip_start": not self.reference}

    def batch_state(self, ctx, tower, x, y) -> dict:
        with torch.no_grad():
            return {"target": ctx.embed(tower if self.trades else ctx.f0, x)}

    def attack_loss(self, ctx, tower, x_adv, x, y, state) -> torch.Tensor:
        return (ctx.embed(tower, x_adv) - state["target"]).pow(2).sum(-1)

    def train_loss(self, ctx, forward, x_adv, x, y, state):
        e_adv, e_clean = _forward_pair(ctx, forward, x_adv, x if self.clean_weight else None)
        adv = (e_adv - state["target"]).pow(2).sum(-1).mean()
        if not self.clean_weight:
            return adv, {"l2": adv.item()}
        clean = (e_clean - state["target"]).pow(2).sum(-1).mean()
        loss = (1 - self.clean_weight) * adv + self.clean_weight * clean
        return loss, {"l2": adv.item(), "l2_clean": clean.item()}

    def config(self) -> dict:
        return {**super().config(), "clean_weight": self.clean_weight, "trades": self.trades}


def resolve_method(name: str) -> str:
    return METHODS.canonical(name)


def build_method(name: str, **options) -> Method:
    return METHODS.build(name, **options)
