"""R-TPT: robust test-time prompt tuning (Sheng et al., *R-TPT: Improving adversarial robustness of
vision-language models through test-time prompt tuning*, CVPR 2025).

Per test image, from a fresh prompt: make 64 views (the image and 63 crops + flips + AugMix, ``_views.py``);
with a CoOp-style learnable context of 4 token embeddings (initialised from "a photo of a", followed by the
class name and "."), take one AdamW step on the mean entropy of the 10 % most confident views; re-predict every
view with the tuned prompt; and ensemble the views' logits with reliability weights: each view's score is the
mean of its 20 largest cosine similarities to the *other* views' image features (the diagonal is masked, not
tested with ``S >= 1``), weights ``softmax(score / 0.01)``. The views: AugMix on, except for the ImageNet family
(ImageNet and its variants), where the authors' code makes crops and flips only; ``view_recipe="auto"`` follows
that rule once the grid names the dataset (``for_dataset``), and ``params()`` records the recipe that ran. Only
the context learns; both encoders are frozen. What it computes: ``../shared/spec/peers.md`` (R-TPT).

Defaults (the paper's): 64 views, context "a photo of a" (4 tokens), lr 5e-3 (AdamW, weight decay 0.01 as
torch's default), 1 step, top 10 % by entropy, 20 neighbours, temperature 0.01, views "auto" (AugMix but on
the ImageNet family).

Minimal passes: the prompt never touches the image branch, so each view's image features are computed once
(64 image forwards per image) and reused for the selection, the loss, the re-prediction and the similarities;
the text tower runs twice per image over all class prompts (initial and tuned context) plus one backward to the
context. All images of a batch are tuned at once (each with its own copy of the context, so their AdamW steps are
independent). ``rtpt_reference.py`` transcribes the reference code's pass pattern (about 4 x 64 image forwards,
text re-encoded on every call) for the tests and the benchmark.

Works on any ``ClipModel`` whose backend gives token-embedding access (open_clip and transformers do:
``ClipModel.tokenize`` / ``embed_tokens`` / ``encode_text_embeddings``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..budgets import whole_number
from ..cost import count_text
from ..data.aliases import imagenet_family
from ._grad import second_order, sign_st
from ._views import make_views
from .base import DEFENSES, Defense


class PromptContext:
    """The class prompts "<ctx> <class name>." of one classifier as token embeddings, with the learnable
    context's initial value and position (cached per classifier: tokenising once)."""

    def __init__(self, model, classnames, init: str):
        init_ids = model.tokenize([init])["ids"][0]
        self.n_ctx = _content_length(init_ids)
        tokens = model.tokenize([f"{init} {name}." for name in classnames])
        # the text tower is causal and pools at the end token: positions after the last end token change no
        # feature, so the prompts are cut there (open_clip pads every prompt to its context length; 32 -> ~12
        # tokens on the embedded model, the text passes get that much cheaper)
        keep = int(tokens["ids"].argmax(-1).max()) + 1
        self.tokens = {k: (None if v is None else v[:, :keep]) for k, v in tokens.items()}
        ids = self.tokens["ids"]
        if not torch.equal(ids[:, 1:1 + self.n_ctx], init_ids[1:1 + self.n_ctx].expand(len(ids), -1)):
            raise ValueError(f"the tokenizer splits the context {init!r} differently inside the class prompts")
        with torch.no_grad():
            self.embeds = model.embed_tokens(ids).float()  # (C, L, D)
        self.ctx0 = self.embeds[0, 1:1 + self.n_ctx].clone()  # (n_ctx, D)

    def text_features(self, model, ctx: torch.Tensor) -> torch.Tensor:
        """Normalised class text features for per-image contexts ``ctx`` (B, n_ctx, D): (B, C, E)."""
        b, c = ctx.shape[0], self.embeds.shape[0]
        e = self.embeds.unsqueeze(0).expand(b, -1, -1, -1)
        e = torch.cat([e[:, :, :1], ctx.unsqueeze(1).expand(-1, c, -1, -1).to(e.dtype), e[:, :, 1 + self.n_ctx:]], 2)
        tokens = {k: (None if v is None else v.repeat(b, 1)) for k, v in self.tokens.items()}
        out = model.encode_text_embeddings(e.reshape(b * c, *e.shape[2:]), tokens).float()
        return F.normalize(count_text(out, b).view(b, c, -1), dim=-1)


def _content_length(ids: torch.Tensor) -> int:
    """Tokens between the start token and the end token of a tokenised string."""
    return int(ids.argmax()) - 1  # the end token has the largest id (open_clip pools on the same rule)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def select_confident(logits: torch.Tensor, top: float) -> torch.Tensor:
    """Indices (B, k) of the ``top`` fraction of views with the lowest entropy (k = int(V * top), at least 1)."""
    v = logits.shape[1]
    k = max(1, int(v * top))
    return entropy(logits.detach()).topk(k, dim=1, largest=False).indices


def reliability_weights(feats: torch.Tensor, neighbours: int, temperature: float,
                        self_mask: str = "diagonal") -> torch.Tensor:
    """``softmax(score / T)`` with ``score_i`` the mean of row i's ``neighbours`` largest cosine similarities to
    the other views. ``feats``: normalised (B, V, E). ``self_mask="diagonal"`` masks each view's similarity to
    itself; ``"reference"`` is the authors' code: it drops every similarity ``>= 1.0``, so a self-similarity that
    rounds to 0.99999994 stays in (as the best neighbour) and exact duplicates of a view drop out. Which diagonal
    entries survive depends on the last bit of ``S``, so ``S`` is formed as theirs is: one ``bmm`` per image of
    its ``(1, V, E)`` features (with the features of ``RTPT._features`` in that mode, one encoder call per
    image)."""
    if self_mask == "reference":
        s = torch.cat([torch.bmm(f.unsqueeze(0), f.unsqueeze(0).transpose(1, 2)) for f in feats])
        s = s.masked_fill(s >= 1.0, float("-inf"))
    else:
        s = feats @ feats.transpose(1, 2)
        eye = torch.eye(s.shape[-1], dtype=torch.bool, device=s.device)
        s = s.masked_fill(eye, float("-inf"))
    k = min(neighbours, s.shape[-1] - 1)
    score = s.topk(k, dim=-1).values.mean(-1)
    return torch.softmax(score / temperature, dim=-1)


VIEW_RECIPES = ("auto", "augmix", "crops")


@DEFENSES.register("rtpt", summary="R-TPT, reliability-weighted test-time prompt tuning (Sheng et al., CVPR 2025)")
class RTPT(Defense):
    """``RTPT(views=64, init="a photo of a", lr=5e-3, steps=1, top=0.1, neighbours=20, temperature=0.01,
    weight_decay=0.01, view_recipe="auto", self_mask="diagonal")`` (module docstring; ``self_mask="reference"``
    is the authors' ``S >= 1`` self-similarity test, an option, not the default). ``view_recipe``: "augmix"
    (crops + flips + AugMix), "crops" (crops + flips) or "auto" (the authors' rule: "crops" on the ImageNet
    family, "augmix" elsewhere and while no dataset is named)."""

    name = "rtpt"
    per_sample_generators = True  # draws through counterclip.rng (batch-size invariant)
    randomized = True
    dynamic = True
    differentiable_modes = ("full", "bpda")
    gradient_choices = {
        "full": "through the views (crops, flips; AugMix straight-through), the image features, the prompt step "
                "(second order through the text tower's context only; AdamW's first step = lr*sign(g) -> tanh "
                "surrogate) and the reliability ensemble; confident-view and top-k choices constant; EOT over views",
        "bpda": "the tuned context is a constant (prompt step not differentiated); views (AugMix straight-through), "
                "features and the ensemble keep their gradient; EOT over views"}

    def __init__(self, views: int = 64, init: str = "a photo of a", lr: float = 5e-3, steps: int = 1,
                 top: float = 0.1, neighbours: int = 20, temperature: float = 0.01, weight_decay: float = 0.01,
                 view_recipe: str = "auto", self_mask: str = "diagonal"):
        if self_mask not in ("diagonal", "reference"):
            raise ValueError(f"self_mask must be 'diagonal' or 'reference' (the reference code's S >= 1 quirk), "
                             f"not {self_mask!r}")
        if view_recipe not in VIEW_RECIPES:
            raise ValueError(f"view_recipe must be one of {', '.join(VIEW_RECIPES)}, not {view_recipe!r}")
        self.self_mask, self.view_recipe, self.dataset = self_mask, view_recipe, None
        whole_number("views", views, 2)
        if steps != 1:
            raise ValueError("R-TPT takes exactly one prompt step (steps=1)")
        self.n_views, self.init, self.lr, self.steps = int(views), init, float(lr), int(steps)
        self.top, self.neighbours, self.temperature = float(top), int(neighbours), float(temperature)
        self.weight_decay = float(weight_decay)
        self._contexts: dict = {}

    def context(self, classifier) -> PromptContext:
        key = (id(classifier.model), tuple(classifier.classnames))
        if key not in self._contexts:
            self._contexts[key] = PromptContext(classifier.model, classifier.classnames, self.init)
        return self._contexts[key]

    def for_dataset(self, name: str) -> "RTPT":
        """This defense as it runs on dataset ``name`` (a copy: one instance serves every dataset of a grid)."""
        bound = copy.copy(self)
        bound.dataset = name
        return bound

    @property
    def recipe(self) -> str:
        """The view recipe that runs: "augmix" or "crops"."""
        if self.view_recipe != "auto":
            return self.view_recipe
        return "crops" if self.dataset is not None and imagenet_family(self.dataset) else "augmix"

    def views(self, x, generator=None):
        return make_views(x, self.n_views, generator, use_augmix=self.recipe == "augmix")

    def _features(self, classifier, views, chunk: int | None = None):
        """Normalised image features of every view, (B, V, E); ``chunk`` views per encoder call (the fast path
        encodes 256 at a time: measured on the embedded model, 2048 views in one call took ~1.5x as long as in
        chunks of 256, the batch no longer fitting the CPU caches)."""
        b, v = views.shape[:2]
        flat = views.reshape(b * v, *views.shape[2:])
        # the reference mask tests the last bit of S, and an encoder's output bits can change with its batch:
        # one call per image's views, as the authors' code encodes them
        step = v if self.self_mask == "reference" else (chunk or len(flat))
        f = torch.cat([classifier.encode_image(flat[i:i + step]).float() for i in range(0, len(flat), step)])
        return F.normalize(f, dim=-1).view(b, v, -1)

    def _adamw(self, ctx, grad):
        """One AdamW step from a fresh state, as ``torch.optim.AdamW`` computes it."""
        opt_ctx = ctx.detach().clone().requires_grad_(True)
        opt = torch.optim.AdamW([opt_ctx], lr=self.lr, weight_decay=self.weight_decay)
        opt_ctx.grad = grad
        opt.step()
        return opt_ctx.detach()

    def tune_and_predict(self, classifier, feats):
        """The prompt step and the ensemble on normalised view features (B, V, E): logits (B, C)."""
        pc = self.context(classifier)
        scale = classifier.logit_scale
        b = feats.shape[0]
        with torch.enable_grad():
            ctx = pc.ctx0.unsqueeze(0).repeat(b, 1, 1).requires_grad_(True)
            logits0 = scale * feats @ pc.text_features(classifier.model, ctx).transpose(1, 2)  # (B, V, C)
            sel = select_confident(logits0, self.top)
            loss = entropy(logits0.gather(1, sel.unsqueeze(-1).expand(-1, -1, logits0.shape[-1]))).mean(1)
            (g,) = torch.autograd.grad(loss.sum(), ctx)
        ctx1 = self._adamw(ctx, g)
        with torch.no_grad():
            logits1 = scale * feats @ pc.text_features(classifier.model, ctx1).transpose(1, 2)
            w = reliability_weights(feats, self.neighbours, self.temperature, self.self_mask)
            return (w.unsqueeze(-1) * logits1).sum(1)

    def predict(self, classifier, x, generator=None):
        views = self.views(x.detach(), generator)
        with torch.no_grad():
            feats = self._features(classifier, views, chunk=256)
        return self.tune_and_predict(classifier, feats)

    def differentiable(self, classifier, x, generator=None, mode: str = "full"):
        """mode="full": through the views (crops and flips; AugMix straight-through), the image features, the
        prompt step and the ensemble. The tuned context's gradient w.r.t. the image is second order through the
        text tower's context only (``create_graph`` on the entropy gradient); AdamW's first step is
        ``lr * g / (|g| + eps)``, i.e. ``lr * sign(g)`` to within eps, differentiated with ``_grad.sign_st``;
        the choice of the confident views and of the top-20 neighbours are constants. mode="bpda": the tuned
        context is a constant (the prompt step is not differentiated); views, features and the ensemble keep
        their gradient."""
        if mode not in ("full", "bpda"):
            raise ValueError(f"unknown differentiable mode {mode!r}; valid: full, bpda")
        views = self.views(x, generator)
        feats = self._features(classifier, views)
        pc = self.context(classifier)
        scale = classifier.logit_scale
        b = feats.shape[0]
        with second_order():
            ctx = pc.ctx0.unsqueeze(0).repeat(b, 1, 1).requires_grad_(True)
            logits0 = scale * feats @ pc.text_features(classifier.model, ctx).transpose(1, 2)
            sel = select_confident(logits0, self.top)
            loss = entropy(logits0.gather(1, sel.unsqueeze(-1).expand(-1, -1, logits0.shape[-1]))).mean(1)
            (g,) = torch.autograd.grad(loss.sum(), ctx, create_graph=mode == "full")
            if mode == "full":
                ctx1 = ctx.detach() * (1 - self.lr * self.weight_decay) - self.lr * sign_st(g)
            else:
                ctx1 = self._adamw(ctx, g.detach())
            logits1 = scale * feats @ pc.text_features(classifier.model, ctx1).transpose(1, 2)
            w = reliability_weights(feats, self.neighbours, self.temperature, self.self_mask)
            return (w.unsqueeze(-1) * logits1).sum(1)

    def params(self) -> dict:
        return {"views": self.n_views, "init": self.init, "lr": self.lr, "steps": self.steps, "top": self.top,
                "neighbours": self.neighbours, "temperature": self.temperature,
                "weight_decay": self.weight_decay, "view_recipe": self.recipe, "self_mask": self.self_mask}
