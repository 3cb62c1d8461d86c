"""Robust finetuned vision towers (TeCoA / PMG-AFT / FARE formats) over the embedded model, loaded strictly."""

import os

import pytest
import torch

import counterclip
from counterclip.errors import CounterclipError

X = torch.rand(4, 3, 28, 28, generator=torch.Generator().manual_seed(0))


def _perturbed(model, seed=1, scale=0.05):
    """The tower's own state dict with every float tensor moved: a stand-in for adversarial finetuning."""
    gen = torch.Generator().manual_seed(seed)
    return {k: (v + scale * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v).clone()
            for k, v in model.visual.state_dict().items()}


def _save_tecoa(sd, path):
    torch.save({"vision_encoder_state_dict": sd, "epoch": 1}, path)


def _save_dataparallel(sd, path):
    torch.save({"vision_encoder_state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, path)


def _save_fare(sd, path):
    torch.save(sd, path)


def _save_safetensors(sd, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))


FORMATS = {
    "tecoa.pth.tar": _save_tecoa,
    "dataparallel.pth.tar": _save_dataparallel,
    "fare.pt": _save_fare,
    "robust.safetensors": _save_safetensors,
}


@pytest.mark.parametrize("filename", list(FORMATS))
def test_robust_tower_loads(tiny_model, tmp_path, filename):
    sd = _perturbed(tiny_model)
    path = tmp_path / filename
    FORMATS[filename](sd, path)
    robust = counterclip.load_model("tiny-fmnist", vision_checkpoint=str(path))
    assert robust.vision_checkpoint == str(path)
    loaded = robust.visual.state_dict()
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    with torch.no_grad():
        clean = tiny_model.encode_image(X)
        assert not torch.allclose(robust.encode_image(X), clean, atol=1e-3)
        # TTC's tau encoder: the original tower, untouched by the finetuned weights
        assert robust.base_visual is not None and robust.base_visual is not robust.visual
        assert torch.allclose(robust.encode_image_base(X), clean, atol=1e-6)
        # the text tower is the base model's
        t = ["a photo of a coat."]
        assert torch.allclose(robust.encode_text(t), tiny_model.encode_text(t))
    assert not robust.training and not any(p.requires_grad for p in robust.parameters())


def test_base_encoder_needs_a_checkpoint(tiny_model):
    with pytest.raises(ValueError):
        tiny_model.encode_image_base(X)


def _drop_proj(sd):
    del sd["proj"]


def _add_extra(sd):
    sd["head.extra_weight"] = torch.zeros(3)


@pytest.mark.parametrize("mutate,save,name,named,absent", [
    (_drop_proj, _save_tecoa, "missing.pth.tar", ("missing keys", "proj"), "unexpected"),
    (_add_extra, _save_fare, "extra.pt", ("unexpected keys", "head.extra_weight"), "missing"),
])
def test_key_mismatch_is_named(tiny_model, tmp_path, mutate, save, name, named, absent):
    sd = _perturbed(tiny_model)
    mutate(sd)
    path = tmp_path / name
    save(sd, path)
    with pytest.raises(CounterclipError) as info:
        counterclip.load_model("tiny-fmnist", vision_checkpoint=str(path))
    assert all(part in str(info.value) for part in named)
    assert absent not in str(info.value)


def test_shape_mismatch_is_named(tiny_model, tmp_path):
    sd = _perturbed(tiny_model)
    sd["proj"] = torch.zeros(3, 3)
    path = tmp_path / "shape.safetensors"
    _save_safetensors(sd, path)
    with pytest.raises(CounterclipError, match="shape mismatch for proj"):
        counterclip.load_model("tiny-fmnist", vision_checkpoint=str(path))


def test_missing_file(tmp_path):
    with pytest.raises(CounterclipError, match="not found"):
        counterclip.load_model("tiny-fmnist", vision_checkpoint=str(tmp_path / "nope.pth.tar"))


class _Payload:
    """Unpickling this would run code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _OpenPayload(_Payload):
    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("payload", [_Payload, _OpenPayload])
def test_malicious_pickle_is_refused(tiny_model, tmp_path, payload):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth.tar"
    sd = _perturbed(tiny_model)
    torch.save({"vision_encoder_state_dict": sd, "epoch": payload(marker)}, path)
    with pytest.raises(CounterclipError) as info:
        counterclip.load_model("tiny-fmnist", vision_checkpoint=str(path))
    assert "refusing" in str(info.value) and "weights_only" in str(info.value)
    assert not marker.exists()
