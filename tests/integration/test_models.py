"""The ClipModel contract on the embedded model, and load_model's errors (unknown names, missing tags, offline)."""

import pytest
import torch

import counterclip
from counterclip.errors import CounterclipError, UnknownNameError
from counterclip.models.clip_model import OPENAI_MEAN, OPENAI_STD


def _pixels(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_normalisation_happens_inside(tiny_model):
    x = _pixels(4, 3, 28, 28)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        manual = tiny_model.visual((x - mean) / std)
        got = tiny_model.encode_image(x)
    assert torch.allclose(got, manual, atol=1e-5)
    assert not torch.allclose(got, tiny_model.visual(x), atol=1e-3)  # raw pixels would give something else


def test_any_size_and_channels(tiny_model):
    with torch.no_grad():
        e_big = tiny_model.encode_image(_pixels(2, 3, 40, 40))
        e_gray = tiny_model.encode_image(_pixels(2, 1, 28, 28))
        e_rect = tiny_model.encode_image(_pixels(2, 1, 33, 21))
    assert e_big.shape == e_gray.shape == e_rect.shape == (2, 128)
    g = _pixels(3, 1, 28, 28, seed=1)
    with torch.no_grad():
        assert torch.allclose(tiny_model.encode_image(g), tiny_model.encode_image(g.repeat(1, 3, 1, 1)), atol=1e-6)
    with pytest.raises(ValueError):
        tiny_model.encode_image(_pixels(2, 2, 28, 28))


def test_gradients_reach_pixels_not_weights(tiny_model):
    x = _pixels(2, 3, 40, 40).requires_grad_(True)
    tiny_model.encode_image(x).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    params = list(tiny_model.parameters())
    assert params, "the model should own its weights"
    assert not any(p.requires_grad for p in params)
    assert all(p.grad is None for p in params)


def test_eval_mode_is_sticky(tiny_model):
    assert not tiny_model.training
    tiny_model.train()
    assert not tiny_model.training
    assert not any(m.training for m in tiny_model.modules())


def test_attributes(tiny_model):
    assert isinstance(tiny_model.logit_scale, float) and tiny_model.logit_scale > 1.0
    assert tiny_model.image_size == 28
    assert tiny_model.name == "tiny-fmnist"
    assert tiny_model.encode_text(["a photo of a bag.", "a photo of a coat."]).shape == (2, 128)


def test_random_init_differs(tiny_model):
    rnd = counterclip.load_model("tiny-fmnist", pretrained="random")
    assert rnd.pretrained == "random"
    w0 = dict(tiny_model.visual.named_parameters())["conv1.weight"]
    w1 = dict(rnd.visual.named_parameters())["conv1.weight"]
    assert w0.shape == w1.shape and not torch.allclose(w0, w1)
    assert not any(p.requires_grad for p in rnd.parameters()) and not rnd.training


def test_embedded_model_rejects_a_tag():
    with pytest.raises(CounterclipError, match="embedded"):
        counterclip.load_model("tiny-fmnist", pretrained="openai")


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        counterclip.load_model("no-such-clip")
    e = info.value
    assert isinstance(e, CounterclipError)
    assert "tiny-fmnist" in e.valid and "ViT-B-32" in e.valid
    assert "tiny-fmnist" in str(e) and "ViT-B-32" in str(e) and "no-such-clip" in str(e)


def test_open_clip_arch_needs_a_tag():
    with pytest.raises(CounterclipError) as info:
        counterclip.load_model("ViT-B-32")
    assert "openai" in str(info.value) and "--pretrained" in str(info.value)


def test_open_clip_unknown_tag():
    with pytest.raises(CounterclipError, match="openai"):
        counterclip.load_model("ViT-B-32", pretrained="no-such-tag")


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch, connections):
    """Weights are never in the cache and the network never answers (``connections`` refuses every attempt),
    on any machine: the real no-network path runs, and ``connections`` counts what it tried."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)  # the reachability probe decides, as for a user without network
    return connections


def _one_clear_error(exc_info, connections):
    e = exc_info.value
    assert type(e) is CounterclipError
    assert e.__cause__ is None and e.__suppress_context__  # one error, not a chain of library tracebacks
    msg = str(e)
    assert "\n" not in msg
    assert "HF_HOME" in msg or "HF_HUB_CACHE" in msg  # how to pre-fill the cache
    assert "--pretrained PATH" in msg  # how to pass a local file
    # one reachability probe, then the hub client offline: huggingface_hub's own retries would try again and
    # again with backoff (minutes without network)
    assert len(connections) == 1, connections


def test_offline_tag_fails_fast_with_instructions(empty_hub_cache):
    with pytest.raises(CounterclipError) as info:
        counterclip.load_model("ViT-B-32", pretrained="openai")
    _one_clear_error(info, empty_hub_cache)
    assert "ViT-B-32" in str(info.value)


def test_offline_hf_hub_id_fails_fast(empty_hub_cache):
    with pytest.raises(CounterclipError) as info:
        counterclip.load_model("hf-hub:timm/does-not-exist")
    _one_clear_error(info, empty_hub_cache)
    assert "timm/does-not-exist" in str(info.value)


def test_local_checkpoint_file_as_pretrained(tiny_model, tmp_path, monkeypatch):
    """An open_clip architecture with a local checkpoint file: the tiny recipe's config registered as an
    architecture (open_clip's models are data), its weights saved as a plain state dict."""
    from open_clip import factory

    from counterclip.training.tiny import MODEL_CFG

    monkeypatch.setitem(factory._MODEL_CONFIGS, "cc-test-tiny", MODEL_CFG)
    path = tmp_path / "tiny_state.pt"
    torch.save(tiny_model.backbone.state_dict(), path)
    model = counterclip.load_model("cc-test-tiny", pretrained=str(path))
    assert model.pretrained == str(path) and not model.training
    x = _pixels(3, 3, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(x), tiny_model.encode_image(x), atol=1e-5)
        t = ["a photo of a bag."]
        assert torch.allclose(model.encode_text(t), tiny_model.encode_text(t), atol=1e-5)
    assert model.logit_scale == pytest.approx(tiny_model.logit_scale)
    with pytest.raises(CounterclipError, match="no such file"):
        counterclip.load_model("cc-test-tiny", pretrained=str(tmp_path / "missing.pt"))
