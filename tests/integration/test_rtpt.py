"""R-TPT: the batched implementation equals the reference pass pattern given the same views, at a quarter of
the image-encoder passes; prompts from token embeddings equal encode_text; the views and the ensemble."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF

from counterclip.cost import PassCounter
from counterclip.defenses import RTPT, Defended
from counterclip.defenses._views import _equalize, make_views
from counterclip.defenses.rtpt import reliability_weights
from counterclip.defenses.rtpt_reference import reference_rtpt_logits
from counterclip.evaluation.describe import adaptive_attacks_for

V = 8  # views in tests (64 by default)


def gens(n, offset=0):
    return [torch.Generator().manual_seed(offset + i) for i in range(n)]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_prompt_embeddings_path_equals_encode_text(tiny_model):
    texts = ["a photo of a t-shirt/top.", "a photo of a ankle boot.", "shoe"]
    tok = tiny_model.tokenize(texts)
    with torch.no_grad():
        got = tiny_model.encode_text_embeddings(tiny_model.embed_tokens(tok["ids"]), tok)
        assert torch.allclose(got, tiny_model.encode_text(texts), atol=1e-6)


def test_rtpt_equals_the_reference_pass_pattern(classifier, batch):
    x = batch[0][:4]
    r = RTPT(views=V)
    views = r.views(x, gens(4))
    with PassCounter() as ours:
        with torch.no_grad():
            logits = r.tune_and_predict(classifier, r._features(classifier, views))
    with PassCounter() as ref:
        ref_logits = reference_rtpt_logits(r, classifier, views)
    assert torch.equal(logits.argmax(-1), ref_logits.argmax(-1))
    assert torch.allclose(logits, ref_logits, atol=1e-4)
    assert ours.per_image(4)["image_forwards_per_image"] == V and ref.per_image(4)["image_forwards_per_image"] == 4 * V
    assert ours.per_image(4)["text_forwards_per_image"] == 2 and ref.per_image(4)["text_forwards_per_image"] == 3
    assert ours.text_backwards == 4
    # the tuned prompt changed the prediction's logits (one AdamW step on the context did something)
    with torch.no_grad():
        untuned = classifier.logit_scale * r._features(classifier, views) @ r.context(classifier).text_features(
            classifier.model, r.context(classifier).ctx0.unsqueeze(0).repeat(4, 1, 1)).transpose(1, 2)
    w = reliability_weights(r._features(classifier, views), r.neighbours, r.temperature)
    assert not torch.allclose((w.unsqueeze(-1) * untuned).sum(1), logits)


def test_views_are_per_sample_and_differentiable(batch):
    x = batch[0][:3]
    v = make_views(x, V, gens(3))
    assert v.shape == (3, V, *x.shape[1:]) and torch.equal(v[:, 0], x)
    assert torch.equal(make_views(x[1:2], V, gens(1, 1)), v[1:2])  # a sample's views do not depend on the batch
    assert v.min() >= 0 and v.max() <= 1 and not torch.equal(v[:, 1], v[:, 2])
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(make_views(xr, V, gens(3))[:, 1:].sum(), xr)
    assert g.abs().sum() > 0
    u8 = (batch[0][:6] * 255).round().to(torch.uint8)
    assert torch.equal(_equalize(u8), TF.equalize(u8))


def test_reliability_weights_mask_the_diagonal():
    f = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.98, -0.1], [0.0, 1.0]]), dim=-1)
    w = reliability_weights(f.unsqueeze(0), neighbours=1, temperature=0.01)[0]
    assert w[3] < 1e-6  # the outlier, whose only similarity of 1 is to itself, gets no weight
    assert torch.isclose(w.sum(), torch.tensor(1.0))


def test_differentiable_modes(classifier, batch):
    x, y = batch[0][:2], batch[1][:2]
    r = RTPT(views=V)
    for mode in r.differentiable_modes:
        xr = x.clone().requires_grad_(True)
        logits = Defended(r, classifier, differentiable=mode)(xr, gens(2))
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y), xr)
        assert g.abs().sum() > 0
    assert all(p.grad is None for p in classifier.parameters())
    assert adaptive_attacks_for(r) == ["eot-pgd", "bpda-pgd"]


def test_prompts_cut_after_the_end_token_give_the_same_features(tiny_model, classifier):
    from counterclip.defenses.rtpt import PromptContext

    pc = PromptContext(tiny_model, classifier.classnames, "a photo of a")
    assert pc.tokens["ids"].shape[1] < 32 and pc.n_ctx == 4
    with torch.no_grad():
        cut = torch.nn.functional.normalize(tiny_model.encode_text_embeddings(pc.embeds, pc.tokens), dim=-1)
        full = torch.nn.functional.normalize(
            tiny_model.encode_text([f"a photo of a {n}." for n in classifier.classnames]), dim=-1)
    assert torch.allclose(cut, full, atol=1e-5)


def test_reference_self_mask_quirk_is_an_option():
    """``S >= 1`` misses a self-similarity that rounds below 1 (the reference code's quirk); the diagonal mask
    does not."""
    f = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=-1)
    f[0] = f[0] * (1 - 1e-7)  # |f0| slightly below 1: its self-similarity is < 1.0
    diag = reliability_weights(f.unsqueeze(0), neighbours=1, temperature=0.01)[0]
    quirk = reliability_weights(f.unsqueeze(0), neighbours=1, temperature=0.01, self_mask="reference")[0]
    assert not torch.allclose(diag, quirk)
    assert quirk[0] > 0.99  # view 0 counted its own similarity as its best neighbour
    with pytest.raises(ValueError):
        RTPT(self_mask="S>=1")
