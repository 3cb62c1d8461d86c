"""Released checkpoints as they are: .pth.tar with epoch numbers, numpy scalars and an argparse Namespace beside the
weights (weights_only=True plus a narrow allowlist), and OpenAI-style TorchScript archives read as data."""

import argparse
import os
import pickle
import warnings
import zipfile

import numpy as np
import pytest
import torch

import counterclip
from counterclip.errors import CounterclipError


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _tower(tiny_model, scale=0.9):
    return {k: v.clone() * scale if v.is_floating_point() else v.clone()
            for k, v in tiny_model.visual.state_dict().items()}


def _training_extras():
    return {"epoch": 10, "best_acc1": np.float64(41.25), "step": np.int64(1234), "eps": np.float32(1 / 255),
            "done": np.bool_(True), "args": argparse.Namespace(arch="ViT-B/32", lr=1e-5, epsilon=1, attack="pgd"),
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0, 1]}]}}


def test_pth_tar_with_numpy_scalars_and_namespace_loads(tiny_model, tmp_path):
    path = tmp_path / "tecoa_eps1.pth.tar"
    torch.save({**_training_extras(), "vision_encoder_state_dict": _tower(tiny_model)}, path)
    model = counterclip.load_model("tiny-fmnist", vision_checkpoint=str(path))
    x = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        assert not torch.allclose(model.encode_image(x), model.encode_image_base(x))
        assert torch.allclose(model.encode_image_base(x), tiny_model.encode_image(x))


def test_object_dtype_and_code_stay_refused(tiny_model, tmp_path):
    path = tmp_path / "objects.pth.tar"
    torch.save({"vision_encoder_state_dict": _tower(tiny_model), "meta": np.array([{"a": 1}], dtype=object)}, path)
    with pytest.raises(CounterclipError) as info:
        counterclip.load_model("tiny-fmnist", vision_checkpoint=str(path))
    msg = str(info.value)
    assert "refusing" in msg and "weights_only" in msg and "\n" not in msg
    # the conversion it gives works (run here on our own, trusted file) and the result loads
    cmd = msg.split('python -c "', 1)[1].split('" and pass', 1)[0]
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        exec(cmd, {})  # noqa: S102 - the hint's own code, on a file this test wrote
    finally:
        os.chdir(cwd)
    counterclip.load_model("tiny-fmnist", vision_checkpoint=str(tmp_path / "weights.pt"))
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth.tar"
    torch.save({**_training_extras(), "vision_encoder_state_dict": _tower(tiny_model), "x": _Payload(marker)}, path)
    with pytest.raises(CounterclipError, match="posix.system|os.system|nt.system"):
        counterclip.load_model("tiny-fmnist", vision_checkpoint=str(path))
    assert not marker.exists()


@pytest.fixture
def tiny_arch(monkeypatch):
    """The tiny recipe's config registered as an open_clip architecture (open_clip's models are data)."""
    from open_clip import factory

    from counterclip.training.tiny import MODEL_CFG

    monkeypatch.setitem(factory._MODEL_CONFIGS, "cc-test-tiny", MODEL_CFG)
    return "cc-test-tiny"


def _same_model(a, b):
    x = torch.rand(2, 3, 28, 28)
    t = ["a photo of a bag.", "a photo of a shirt."]
    with torch.no_grad():
        return torch.allclose(a.encode_image(x), b.encode_image(x), atol=1e-6) and \
            torch.allclose(a.encode_text(t), b.encode_text(t), atol=1e-6)


def test_pretrained_file_with_training_extras_loads(tiny_model, tiny_arch, tmp_path):
    path = tmp_path / "full.pth.tar"
    torch.save({**_training_extras(), "state_dict": tiny_model.backbone.state_dict()}, path)
    assert _same_model(counterclip.load_model(tiny_arch, pretrained=str(path)), tiny_model)


def _scripted(tiny_model, path):
    x = torch.rand(1, 3, 28, 28)
    t = torch.zeros(1, tiny_model.backbone.context_length, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(tiny_model.backbone, (x, t), check_trace=False, strict=False).save(str(path))


def test_torchscript_archive_as_pretrained_is_read_as_data(tiny_model, tiny_arch, tmp_path, monkeypatch):
    path = tmp_path / "ViT-tiny.pt"
    _scripted(tiny_model, path)

    def no_jit(*a, **k):
        raise AssertionError("torch.jit.load would run the archive's code")

    monkeypatch.setattr(torch.jit, "load", no_jit)
    model = counterclip.load_model(tiny_arch, pretrained=str(path))
    assert _same_model(model, tiny_model) and model.activation == "gelu"  # the archive's own GELU modules
    vc = counterclip.load_model("tiny-fmnist", vision_checkpoint=str(path))  # also as a vision tower
    assert _same_model(vc, tiny_model)


def test_torchscript_archive_with_code_in_its_pickle_is_one_line(tiny_model, tiny_arch, tmp_path):
    good = tmp_path / "good.pt"
    _scripted(tiny_model, good)
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(_Payload(marker), protocol=2)
            zout.writestr(item, data)
    with pytest.raises(CounterclipError) as info:
        counterclip.load_model(tiny_arch, pretrained=str(bad))
    msg = str(info.value)
    assert "refusing global" in msg and "torch.jit.load" in msg and "\n" not in msg  # says how to convert it
    assert not marker.exists()


def test_a_local_dir_with_a_pickled_checkpoint_is_refused_naming_its_file(tmp_path):
    """open_clip's ``local-dir:`` route: a pickled open_clip_pytorch_model.bin with a payload is refused in one
    line that names the file and the global it needs, and the payload does not run."""
    import shutil

    from safetensors.torch import load_file

    from counterclip.models.registry import embedded_dir

    src = embedded_dir("tiny-fmnist")
    folder = tmp_path / "evil_dir"
    folder.mkdir()
    shutil.copy(src / "open_clip_config.json", folder)
    marker = tmp_path / "pwned"
    torch.save({**load_file(str(src / "open_clip_model.safetensors")), "x": _Payload(marker)},
               folder / "open_clip_pytorch_model.bin")
    with pytest.raises(CounterclipError) as info:
        counterclip.load_model(f"local-dir:{folder}")
    msg = str(info.value)
    assert f"refusing to load {folder / 'open_clip_pytorch_model.bin'}" in msg and "system" in msg
    assert "\n" not in msg and not marker.exists()
