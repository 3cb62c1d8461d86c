"""ZeroShotClassifier on the embedded model: cached text, prompt ensembling, logits, gradients, accuracy; zero-shot
records under both prompt styles."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from counterclip import ZeroShotClassifier

TEMPLATES = ["a photo of a {}.", "a picture of the {}.", "{}."]


class CountingModel(nn.Module):
    """Delegates to a ClipModel and counts encode_text calls."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.logit_scale = model.logit_scale
        self.text_calls = 0

    def encode_text(self, texts):
        self.text_calls += 1
        return self.inner.encode_text(texts)

    def encode_image(self, x):
        return self.inner.encode_image(x)


def test_text_is_encoded_once(tiny_model, fmnist_test, batch):
    counting = CountingModel(tiny_model)
    clf = ZeroShotClassifier(counting, fmnist_test.classnames, TEMPLATES)
    calls = counting.text_calls
    assert 1 <= calls <= len(fmnist_test.classnames)
    x = batch[0][:8]
    for _ in range(3):
        clf(x)
    x_adv = x.clone().requires_grad_(True)
    clf(x_adv).sum().backward()
    clf.logits_from_embeddings(clf.encode_image(x))
    assert counting.text_calls == calls
    assert not any(b.requires_grad for b in clf.buffers())


def test_prompt_ensembling(tiny_model, fmnist_test):
    clf = ZeroShotClassifier(tiny_model, fmnist_test.classnames, TEMPLATES)
    assert clf.text_embeddings.shape == (10, 128)
    with torch.no_grad():
        for i, name in enumerate(fmnist_test.classnames):
            embs = torch.stack([F.normalize(tiny_model.encode_text([t.format(name)])[0], dim=-1) for t in TEMPLATES])
            want = F.normalize(embs.mean(0), dim=-1)
            assert torch.allclose(clf.text_embeddings[i], want, atol=1e-5), name
    assert torch.allclose(clf.text_embeddings.norm(dim=-1), torch.ones(10), atol=1e-5)
    single = ZeroShotClassifier(tiny_model, fmnist_test.classnames, "a photo of a {}.")
    assert single.templates == ["a photo of a {}."]
    assert not torch.allclose(single.text_embeddings, clf.text_embeddings)


def test_logits_are_scaled_cosines(classifier, tiny_model, batch):
    x = batch[0][:16]
    with torch.no_grad():
        logits = classifier(x)
        img = tiny_model.encode_image(x)
        text = tiny_model.encode_text([classifier.templates[0].format(c) for c in classifier.classnames])
    cos = F.cosine_similarity(img[:, None, :], text[None, :, :], dim=-1)
    assert logits.shape == (16, 10)
    assert classifier.logit_scale == tiny_model.logit_scale
    assert torch.allclose(logits, tiny_model.logit_scale * cos, atol=1e-4)
    assert torch.allclose(classifier.logits_from_embeddings(classifier.encode_image(x)), logits, atol=1e-6)
    # the embedding's scale does not matter: logits see only its direction
    assert torch.allclose(classifier.logits_from_embeddings(3.0 * img), logits, atol=1e-4)


def test_gradients_flow_to_the_input(classifier, batch):
    x, y = batch[0][:8].clone().requires_grad_(True), batch[1][:8]
    F.cross_entropy(classifier(x), y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in classifier.parameters())


def test_needs_classes(tiny_model):
    with pytest.raises(ValueError):
        ZeroShotClassifier(tiny_model, [])


def test_zeroshot_accuracy_first_500(classifier, fmnist_test):
    ds = fmnist_test.dataset
    x, y = ds.x[:500], ds.y[:500]
    with torch.no_grad():
        pred = torch.cat([classifier(x[i:i + 250]).argmax(-1) for i in range(0, 500, 250)])
    acc = (pred == y).float().mean().item()
    assert acc >= 0.80, acc  # the full test set gives 0.866


def test_classifier_is_a_proper_module(tiny_model, fmnist_test, batch, tmp_path):
    import copy

    x = batch[0][:4]
    clf = ZeroShotClassifier(tiny_model, fmnist_test.classnames, TEMPLATES)
    # the text embeddings travel in the state dict: loading replaces stale text in another classifier
    other = ZeroShotClassifier(tiny_model, list(reversed(fmnist_test.classnames)), TEMPLATES)
    assert "text_embeddings" in clf.state_dict()
    other.load_state_dict(clf.state_dict())
    assert torch.equal(other.text_embeddings, clf.text_embeddings)
    assert other.classnames == clf.classnames  # the labels follow the embeddings
    sd_path = tmp_path / "clf_state.pt"
    torch.save(clf.state_dict(), sd_path)  # and a state dict loads without unpickling code
    third = ZeroShotClassifier(tiny_model, ["a", "b"] + fmnist_test.classnames[2:], ["{}"])
    third.load_state_dict(torch.load(sd_path, weights_only=True))
    assert third.classnames == clf.classnames and third.templates == clf.templates
    with torch.no_grad():
        assert torch.equal(other(x), clf(x))
    # torch.save pickles the whole classifier (loading it back is the user's own trusted file)
    path = tmp_path / "clf.pt"
    torch.save(clf, path)
    back = torch.load(path, weights_only=False)
    with torch.no_grad():
        assert torch.allclose(back(x), clf(x))
        assert torch.allclose(back.model.encode_text(["a shirt"]), clf.model.encode_text(["a shirt"]))
    # a deep copy is independent: its text encoder uses its own (copied) weights
    twin = copy.deepcopy(clf)
    with torch.no_grad():
        for p in twin.model.parameters():
            p.add_(0.01)
        assert not torch.allclose(twin.model.encode_text(["a shirt"]), clf.model.encode_text(["a shirt"]))
        assert not torch.allclose(twin.model.encode_image(x), clf.model.encode_image(x))
        assert torch.allclose(copy.deepcopy(clf)(x), clf(x))


def _png(path, color=(255, 0, 0)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), color).save(path)


def test_zeroshot_keeps_both_prompt_styles_and_states_them(tmp_path):
    from counterclip.data import paper
    from counterclip.evaluation.zeroshot import run_zeroshot

    for c in paper.load_metadata("eurosat")["raw_classes"]:
        _png(tmp_path / "eurosat" / "2750" / c / "a.jpg")
    recs = {}
    for style in ("clip", "reference"):
        with pytest.warns(UserWarning, match="allow-partial"):
            recs[style] = run_zeroshot("tiny-fmnist", "eurosat", tmp_path / "out", data_root=tmp_path,
                                       prompts=style, allow_partial=True)
    assert recs["clip"]["_path"] != recs["reference"]["_path"]  # the second style did not overwrite the first
    assert len(list((tmp_path / "out").glob("zeroshot_*.json"))) == 2
    for style, rec in recs.items():
        assert rec["prompts"] == style and rec["precision"] == "fp32" and rec["activation"] == "gelu"
        assert rec["source"] == "torchvision" and rec["count_check"]["status"] == "partial (allowed)"
