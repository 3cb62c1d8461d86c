"""The defense contract and ``Defended``, a defended classifier that is itself an ``nn.Module``.

``defense(classifier, x, generator=None) -> logits``: the fast inference path (no-grad, detached passes).
``defense.differentiable(classifier, x, generator=None, mode=...) -> logits``: the same prediction computed with
a graph back to ``x``, for attacks that target the defense (its gradient choices are documented per defense).
``differentiable_modes`` says which modes a defense implements itself: ``"full"`` (through the purification,
straight-through where a step has no useful derivative) and ``"bpda"`` (the purification is identity on the
backward pass). A defense with none still gets a generic ``"bpda"`` from this base class: the whole defense is
identity on the backward pass (the gradient of the undefended classifier at ``x``).
``classifier`` is a ``ZeroShotClassifier`` (or anything with ``encode_image``, ``logits_from_embeddings`` and
``__call__``).

Optional hooks that later work adds to the protocol keep defaults here, so a defense written against an older
protocol keeps working.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from .. import rng
from ..inputs import entry
from ..registry import Registry

MODES = ("full", "bpda")

# what each gradient mode costs, in the words of the one-line error and the docs
MODE_COSTS = {
    "bpda": "the purification is identity on the backward pass: one purification without a graph plus one "
            "forward+backward of the classifier per call, the cheapest",
    "full": "differentiates through the purification (second order for gradient-based defenses): for TTC's 2 "
            "steps about twice BPDA's time",
}


# the methods that take ``generator`` (wrapped by Defense.__init_subclass__ for single-generator defenses)
GENERATOR_METHODS = ("predict", "differentiable", "gate_score", "gate_terms")


def _with_one_generator(method):
    @functools.wraps(method)
    def wrapper(self, classifier, x, generator=None, *args, **kwargs):
        one = rng.one_generator(generator, getattr(x, "device", "cpu"))
        return method(self, classifier, x, one, *args, **kwargs)

    wrapper.one_generator = True
    return wrapper


class Defense:
    name = "defense"  # the CLI word
    # The grid hands every generator-taking method one torch.Generator per sample (counterclip.rng), so results
    # do not depend on the batch size or sharding; a defense that draws through counterclip.rng's helpers
    # declares that it takes them (all built-ins do). One that does not, such as a plugin calling
    # torch.randn(..., generator=generator) itself, gets a single torch.Generator on x's device instead
    # (rng.one_generator): it works as written, seeded, at the cost of batch-size invariance. See
    # docs/extending.md.
    per_sample_generators = False
    randomized = False  # its output depends on a random draw
    dynamic = False  # it optimises per input at test time (gradient-based purification)
    differentiable_modes: tuple = ()  # modes .differentiable() implements itself, a subset of ("full", "bpda")
    # its output is the classifier's on inputs within its own ``eps`` of x (a purification that only adds a
    # perturbation bounded by eps), so with eps=0 it is the undefended prediction; False for a defense without
    # such a budget or whose views are not bound by it (crops, augmentations)
    budget_bound = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if getattr(cls, "per_sample_generators", False):
            return
        for name in GENERATOR_METHODS:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "one_generator", False):
                setattr(cls, name, _with_one_generator(method))

    def __call__(self, classifier, x: torch.Tensor, generator=None) -> torch.Tensor:
        with entry(x, f"{type(self).__name__}(classifier, x)"):
            return self._call(classifier, x, generator)

    def _call(self, classifier, x, generator):
        if torch.is_inference_mode_enabled():
            # gradient-based purification needs autograd, which inference mode switches off for good: leave
            # it, with a normal copy of the input (an inference tensor cannot enter a recorded graph)
            with torch.inference_mode(False):
                x = x.clone()
                with torch.no_grad():
                    return self.predict(classifier, x, generator)
        with torch.no_grad():
            return self.predict(classifier, x, generator)

    def predict(self, classifier, x, generator=None) -> torch.Tensor:
        raise NotImplementedError

    def differentiable(self, classifier, x, generator=None, mode: str = "full") -> torch.Tensor:
        """Without modes of its own, ``"bpda"`` is the generic straight-through estimate of the whole defense:
        its fast-path logits forward, the undefended classifier's gradient at ``x`` backward."""
        if mode == "bpda":
            return straight_through(self, classifier, x, generator)
        raise ValueError(f"{type(self).__name__} has no differentiable mode {mode!r}; "
                         f"it supports: {', '.join(supported_modes(self))}")

    # -- optional self-description read by attacks (defaults: ungated) ---------------------------------------
    # A gated defense purifies only inputs its gate flags. ``gate_score`` is its per-sample score (a Tensor[B],
    # differentiable in x when called with grad enabled), ``gate_threshold`` the threshold on it, and
    # ``gate_purifies`` the side that gets purified: "below" (score < threshold: TTC's tau, CSR's cosine) or
    # "above" (score > threshold: MAC's corruption degree). The gate-aware attack reads these three and nothing
    # else about the defense.
    gate_threshold = None
    gate_purifies = "below"

    def gate_score(self, classifier, x, generator=None):
        return None

    def gate_terms(self, classifier, x, generator=None):
        """``(logits, score)``: the logits the defense returns for ``x`` when its gate lets ``x`` through
        unpurified, and the gate score, both with a graph to ``x`` (one draw of the defense's randomness shared
        by the two). Default: the undefended classifier's logits and ``gate_score``."""
        return classifier(x), self.gate_score(classifier, x, generator)

    def params(self) -> dict:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self.params().items())})"


# every defense registers itself where it is defined (``@DEFENSES.register("word")``); a user's
# ``pkg.mod:Cls`` resolves through the same registry and must subclass Defense
DEFENSES: Registry = Registry("defense", base=Defense, base_label="counterclip.defenses.Defense (the protocol: "
                                                                 "predict(classifier, x, generator=None) -> logits)")


def own_modes(defense) -> tuple:
    """The differentiable modes ``defense`` implements itself (a defense written before the attribute existed
    that overrides ``differentiable`` is taken to have both)."""
    modes = tuple(getattr(defense, "differentiable_modes", ()) or ())
    if not modes and getattr(type(defense), "differentiable", Defense.differentiable) is not Defense.differentiable:
        modes = MODES
    return modes


def supported_modes(defense) -> tuple:
    """The gradient modes available for ``defense``: its own, plus the generic ``"bpda"`` for every defense."""
    own = own_modes(defense)
    return own + (("bpda",) if "bpda" not in own else ())


def straight_through(defense, classifier, x, generator=None) -> torch.Tensor:
    """Defended logits forward, ``classifier(x)``'s gradient backward (BPDA with the whole defense as identity)."""
    with torch.no_grad():
        defended = defense(classifier, x.detach(), generator)
    undefended = classifier(x)
    return undefended + (defended.to(undefended.dtype) - undefended).detach()


def for_dataset(defense, name: str):
    """``defense`` as it runs on dataset ``name``: a defense whose recipe depends on the dataset (R-TPT's views
    on the ImageNet family) has a ``for_dataset`` method returning its bound copy; any other is itself."""
    bind = getattr(defense, "for_dataset", None)
    return bind(name) if callable(bind) else defense


def gate_passes(defense, score: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """Per sample: True where the gate lets the input through unpurified (the attacker's goal)."""
    thr = defense.gate_threshold if threshold is None else threshold
    return score >= thr if defense.gate_purifies == "below" else score <= thr


def has_gate(defense) -> bool:
    """The defense describes a gate (its class implements ``gate_score``)."""
    return type(defense).gate_score is not Defense.gate_score


@DEFENSES.register("none", summary="the undefended classifier")
class NoDefense(Defense):
    """The undefended classifier (CLI word ``none``)."""

    name = "none"
    per_sample_generators = True
    differentiable_modes = ("full", "bpda")  # both exact

    def predict(self, classifier, x, generator=None):
        return classifier(x)

    def differentiable(self, classifier, x, generator=None, mode: str = "full"):
        return classifier(x)


class _NoInputGradient(torch.autograd.Function):
    """Identity on the fast path's logits whose backward raises: an attack asking the inference-only mode for a
    gradient gets a line saying which modes give one, not torch's "does not require grad"."""

    @staticmethod
    def forward(ctx, x, logits, message):
        ctx.message = message
        return logits.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(ctx.message)


class Defended(nn.Module):
    """``Defended(defense, classifier, differentiable="auto", generator=None)``: an ``nn.Module`` mapping pixels
    in [0,1] to defended logits, ready for attack libraries (torchattacks, AutoAttack) and plain autograd.

    Every call that cannot ask for an input gradient (under ``torch.no_grad`` / ``inference_mode``, or on an
    input that does not require grad) runs the defense's fast inference path, whatever the mode: attack
    libraries check predictions that way. When a gradient can be asked for, ``differentiable`` decides:

    * ``"auto"`` (default): ``"bpda"``, the cheapest gradient that sees the defense (BPDA, Athalye et al. 2018).
      For defenses whose purification is differentiable as it stands (RN, TTE, none) it is exact. A defense
      that implements only ``"full"`` gets its full gradient.
    * ``"bpda"``: ``defense.differentiable(..., mode="bpda")``; the purification is identity on the backward
      pass (one purification without a graph + one forward/backward of the classifier). A defense without
      modes of its own gets the generic version (the whole defense as identity).
    * ``"full"`` or ``True``: through the purification with the gradient choices the defense documents (for
      TTC: the unrolled counterattack, second order; about twice BPDA's time with TTC's 2 steps).
    * ``False`` or ``"inference"``: the fast path only; asking it for an input gradient raises one line
      naming the modes that give one.

    ``generator`` seeds the defense's randomness (a randomised defense draws anew on every call, so an attack
    that wants the expectation uses EOT).
    """

    def __init__(self, defense: Defense, classifier: nn.Module, differentiable: bool | str = "auto",
                 generator=None):
        super().__init__()
        if differentiable is True:
            differentiable = "full"
        elif differentiable is False:
            differentiable = "inference"
        if differentiable not in ("auto", "inference") + MODES:
            raise ValueError(f"differentiable must be 'auto', 'bpda', 'full' (True) or 'inference' (False), "
                             f"not {differentiable!r}")
        if differentiable in MODES and differentiable not in supported_modes(defense):
            raise ValueError(f"{type(defense).__name__} has no differentiable mode {differentiable!r}; it "
                             f"supports: {', '.join(supported_modes(defense))}")
        self.defense = defense
        self.classifier = classifier
        self.mode = differentiable
        self.generator = generator

    @property
    def gradient_mode(self) -> str | None:
        """The mode that answers a gradient request (None for the inference-only mode)."""
        if self.mode == "inference":
            return None
        if self.mode != "auto":
            return self.mode
        own = own_modes(self.defense)  # the defense's own BPDA, else its own full gradient, else generic BPDA
        return "full" if "full" in own and "bpda" not in own else "bpda"

    @property
    def classnames(self):
        return self.classifier.classnames

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    def _no_gradient_message(self) -> str:
        modes = sorted(supported_modes(self.defense), key=lambda m: m != "bpda")
        return (f"Defended({type(self.defense).__name__}) is in its inference-only mode (differentiable=False) "
                "and has no input gradient; ask for one with "
                + " or ".join(f"differentiable={m!r} ({MODE_COSTS[m]})" for m in modes))

    def forward(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        with entry(x, f"Defended({type(self.defense).__name__})"):
            return self._forward(x, generator)

    def _forward(self, x, generator):
        gen = generator if generator is not None else self.generator
        wants_grad = torch.is_grad_enabled() and x.requires_grad
        if not wants_grad:
            return self.defense(self.classifier, x, gen)
        mode = self.gradient_mode
        if mode is None:
            return _NoInputGradient.apply(x, self.defense(self.classifier, x, gen), self._no_gradient_message())
        if mode in own_modes(self.defense):
            return self.defense.differentiable(self.classifier, x, gen, mode=mode)
        return straight_through(self.defense, self.classifier, x, gen)

    def extra_repr(self) -> str:
        return f"defense={self.defense!r}, differentiable={self.mode!r}"
