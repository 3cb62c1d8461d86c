"""The tiny-model recipe is seeded and reproducible, and writes a folder open_clip loads (512 images, 4 steps)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from counterclip.training.tiny import train_tiny

KW = dict(epochs=1, batch_size=128, max_images=512, log=lambda *_: None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # one thread: the same seed and thread count give the same weights, and on shared cores one thread is
    # several times faster than two for a model this small
    threads = torch.get_num_threads()
    out = {}
    try:
        for label, seed in (("a", 0), ("b", 0), ("c", 1)):
            d = tmp_path_factory.mktemp(f"tiny_{label}")
            info = train_tiny(d, seed=seed, threads=1, **KW)
            out[label] = (d, info)
    finally:
        torch.set_num_threads(threads)
    return out


def _tensors(d):
    return load_file(str(d / "open_clip_model.safetensors"))


def test_same_seed_same_weights(runs):
    a, b = _tensors(runs["a"][0]), _tensors(runs["b"][0])
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_other_seed_other_weights(runs):
    a, c = _tensors(runs["a"][0]), _tensors(runs["c"][0])
    assert a.keys() == c.keys()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_folder_contents(runs):
    d, info = runs["a"]
    tensors = _tensors(d)
    assert tensors["logit_scale"].dtype == torch.float32
    assert tensors["visual.conv1.weight"].dtype == torch.float16  # stored half, upcast at load time
    cfg = json.loads((d / "open_clip_config.json").read_text())
    assert cfg["model_cfg"]["vision_cfg"]["image_size"] == 28
    recorded = json.loads((d / "training.json").read_text())
    assert recorded["seed"] == 0 and recorded["max_images"] == 512 and recorded["epochs"] == 1
    assert info["batch_size"] == 128 and info["threads"] == 1


def test_folder_loads_with_open_clip_backend(runs):
    from counterclip.models import openclip_backend

    d = runs["a"][0]
    model = openclip_backend.build("local-dir:" + str(d), None)
    assert model.image_size == 28 and not model.training
    with torch.no_grad():
        assert model.encode_image(torch.rand(2, 1, 28, 28)).shape == (2, 128)
        assert model.encode_text(["a photo of a bag."]).shape == (1, 128)
    sd = model.backbone.state_dict()
    saved = _tensors(d)
    assert torch.equal(sd["visual.conv1.weight"], saved["visual.conv1.weight"].float())


def test_max_images_below_batch_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="max_images"):
        train_tiny(tmp_path, epochs=1, batch_size=128, max_images=64, log=lambda *_: None)


def test_the_shipped_model_is_never_the_default_output(tmp_path, capsys):
    """train-tiny needs --output, refuses the package's own folder without --overwrite-embedded, and the folder
    it writes loads by name as the README says (--model local-dir:DIR)."""
    import counterclip
    from counterclip.cli import main
    from counterclip.errors import CounterclipError
    from counterclip.models.registry import embedded_dir

    shipped = embedded_dir("tiny-fmnist")
    before = {p.name: p.stat().st_mtime_ns for p in shipped.iterdir()}
    with pytest.raises(SystemExit):
        main(["train-tiny"])  # no --output: argparse refuses
    capsys.readouterr()
    assert main(["train-tiny", "--output", str(shipped), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite-embedded" in err and err.count("\n") == 1
    with pytest.raises(CounterclipError, match="shipped tiny-fmnist"):
        train_tiny(shipped / ".." / shipped.name, **KW)  # the same folder spelled another way
    assert {p.name: p.stat().st_mtime_ns for p in shipped.iterdir()} == before
    d, threads = tmp_path / "mine", torch.get_num_threads()
    try:
        train_tiny(d, threads=1, **KW)
    finally:
        torch.set_num_threads(threads)
    model = counterclip.load_model(f"local-dir:{d}")
    assert model.image_size == 28
