"""The transformers backend (``hf:<dir>``) on a tiny random CLIPModel saved locally, with a real BPE tokenizer."""

import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

import counterclip  # noqa: E402
from counterclip.errors import CounterclipError  # noqa: E402

PROJ = 16
LOGIT_SCALE = 42.0


def _bytes_to_unicode():
    """GPT-2 / CLIP's byte -> printable-character table (every byte gets a vocabulary entry)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _write_tokenizer_files(folder):
    chars = _bytes_to_unicode()
    vocab = {}
    for c in chars + [c + "</w>" for c in chars]:
        vocab[c] = len(vocab)
    merges = [("p", "h"), ("ph", "o"), ("pho", "t"), ("phot", "o</w>"), ("c", "a"), ("ca", "t</w>")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return vocab


def _save_random_clip(tmp_path_factory, name, vision, text_layers=2):
    """A random CLIPModel with ``vision`` settings and a real BPE tokenizer, saved as ``save_pretrained`` does."""
    src = tmp_path_factory.mktemp(f"{name}_tok")
    vocab = _write_tokenizer_files(src)
    tokenizer = transformers.CLIPTokenizer(str(src / "vocab.json"), str(src / "merges.txt"))
    eos = vocab["<|endoftext|>"]
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=text_layers,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=eos, pad_token_id=eos),
        vision_config=dict(num_hidden_layers=2, num_attention_heads=2, **vision), projection_dim=PROJ)
    torch.manual_seed(0)
    model = transformers.CLIPModel(cfg)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(LOGIT_SCALE))
    out = tmp_path_factory.mktemp(name)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return _save_random_clip(tmp_path_factory, "hf_clip",
                             dict(hidden_size=32, intermediate_size=64, image_size=32, patch_size=8))


@pytest.fixture(scope="module")
def hf_model(hf_dir):
    return counterclip.load_model("hf:" + str(hf_dir))


def test_contract(hf_model):
    assert hf_model.image_size == 32
    assert isinstance(hf_model.logit_scale, float)
    assert hf_model.logit_scale == pytest.approx(LOGIT_SCALE, rel=1e-5)
    assert not hf_model.training and not any(p.requires_grad for p in hf_model.parameters())
    x = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert hf_model.encode_image(x).shape == (3, PROJ)
        assert hf_model.encode_image(x[:, :1, :28, :28]).shape == (3, PROJ)
        t = hf_model.encode_text(["a photo of a cat.", "a photo of a dog.", "shoe"])
    assert t.shape == (3, PROJ)
    assert not torch.allclose(t[0], t[1])  # the tokenizer tells the words apart


def test_normalisation_matches_the_transformers_model(hf_model, hf_dir):
    """encode_image(pixels in [0,1]) == CLIPModel.get_image_features(CLIP-normalised pixels)."""
    ref = transformers.CLIPModel.from_pretrained(str(hf_dir)).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = ref.get_image_features(pixel_values=(x - mean) / std)
        want = want if isinstance(want, torch.Tensor) else want.pooler_output
        assert torch.allclose(hf_model.encode_image(x), want, atol=1e-5)


def test_zeroshot_classifier_gradients(hf_model):
    clf = counterclip.ZeroShotClassifier(hf_model, ["cat", "dog", "shoe"], ["a photo of a {}.", "{}"])
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    logits = clf(x)
    assert logits.shape == (2, 3)
    logits[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in hf_model.parameters())


def test_missing_directory_is_one_clear_error(tmp_path):
    with pytest.raises(CounterclipError) as info:
        counterclip.load_model("hf:/nonexistent/dir")
    msg = str(info.value)
    assert "/nonexistent/dir" in msg and "\n" not in msg
    assert info.value.__cause__ is None


def test_directory_without_a_model_is_one_clear_error(tmp_path):
    with pytest.raises(CounterclipError) as info:
        counterclip.load_model("hf:" + str(tmp_path))
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_hf_rejects_pretrained(hf_dir):
    with pytest.raises(CounterclipError, match="pretrained"):
        counterclip.load_model("hf:" + str(hf_dir), pretrained="openai")


@pytest.fixture(scope="module")
def hf_224_dir(tmp_path_factory):
    """A random ViT/32-geometry CLIPModel (224 px, patch 32, narrow)."""
    return _save_random_clip(tmp_path_factory, "hf_clip224",
                             dict(hidden_size=64, intermediate_size=128, image_size=224, patch_size=32), text_layers=1)


@pytest.mark.parametrize("resample", [3, 2])  # PIL bicubic (CLIP's), bilinear: the setting is honoured
def test_encode_image_matches_the_hf_processor_on_non_square_images(hf_224_dir, resample):
    from PIL import Image

    transformers.CLIPImageProcessor(resample=resample).save_pretrained(str(hf_224_dir))
    model = counterclip.load_model("hf:" + str(hf_224_dir))
    assert model.geometry.interpolation == {3: "bicubic", 2: "bilinear"}[resample]
    ref_model = transformers.CLIPModel.from_pretrained(str(hf_224_dir)).eval()
    proc = transformers.AutoImageProcessor.from_pretrained(str(hf_224_dir))
    for h, w, seed in ((375, 500, 0), (48, 64, 1)):
        x = torch.randint(0, 256, (1, 3, h, w), generator=torch.Generator().manual_seed(seed)).float() / 255
        img = Image.fromarray((x[0].permute(1, 2, 0) * 255).round().byte().numpy())
        pixels = proc(images=img, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            want = ref_model.get_image_features(pixel_values=pixels)
            want = want if isinstance(want, torch.Tensor) else want.pooler_output
            got = model.encode_image(x)
        assert torch.nn.functional.cosine_similarity(got, want).item() > 0.9999, (h, w, resample)
        # pixel for pixel within uint8 rounding (the other resample is ~20x further off)
        assert (model.preprocess(x) - pixels).abs().mean() < 0.02, (h, w, resample)


def test_a_folder_without_tokenizer_files_fails_in_one_line(tmp_path, hf_dir):
    bare = tmp_path / "no_tokenizer"
    transformers.CLIPModel.from_pretrained(str(hf_dir)).save_pretrained(str(bare))
    with pytest.raises(CounterclipError, match="no usable tokenizer") as info:
        counterclip.load_model("hf:" + str(bare))
    assert "\n" not in str(info.value)


def test_hf_model_pickles_and_deep_copies(hf_model, tmp_path):
    import copy

    clf = counterclip.ZeroShotClassifier(hf_model, ["cat", "shoe"])
    torch.save(clf, tmp_path / "clf.pt")
    back = torch.load(tmp_path / "clf.pt", weights_only=False)
    twin = copy.deepcopy(hf_model)
    with torch.no_grad():
        assert torch.allclose(back.text_embeddings, clf.text_embeddings)
        assert torch.allclose(back.model.encode_text(["cat"]), hf_model.encode_text(["cat"]), atol=1e-6)
        for p in twin.parameters():
            p.add_(0.05)
        assert not torch.allclose(twin.encode_text(["cat"]), hf_model.encode_text(["cat"]))


def test_text_from_token_embeddings_equals_encode_text(hf_model):
    """The prompt-embedding path (R-TPT's learnable context) is the text tower after the embedding lookup."""
    texts = ["a photo of a cat.", "a photo of a dog, a pet.", "shoe"]
    tok = hf_model.tokenize(texts)
    with torch.no_grad():
        got = hf_model.encode_text_embeddings(hf_model.embed_tokens(tok["ids"]), tok)
        want = hf_model.encode_text(texts)
    assert torch.allclose(got, want, atol=1e-5)


class _Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_weights_with_a_payload_are_refused_before_transformers_reads_them(hf_dir, tmp_path, monkeypatch,
                                                                                  capsys):
    import shutil

    evil = tmp_path / "evil_clip"
    shutil.copytree(hf_dir, evil)
    sd = transformers.CLIPModel.from_pretrained(str(hf_dir)).state_dict()
    (evil / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({**sd, "payload": _Payload(marker)}, evil / "pytorch_model.bin")

    def no_read(*a, **k):
        raise AssertionError("transformers was asked to read the folder")

    monkeypatch.setattr(transformers.CLIPModel, "from_pretrained", no_read)
    with pytest.raises(CounterclipError) as info:
        counterclip.load_model("hf:" + str(evil))
    msg = str(info.value)
    assert "\n" not in msg and "pytorch_model.bin" in msg and ".safetensors" in msg and "save_pretrained" in msg
    assert not marker.exists()
    # the CLI says the same in one line, without a traceback
    from counterclip.cli import main

    capsys.readouterr()
    assert main(["zeroshot", "--model", "hf:" + str(evil), "--dataset", "fashion-mnist", "--limit", "2",
                 "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to load hf model" in err and "Traceback" not in err
    assert not marker.exists()


def test_a_config_that_names_a_pickled_weights_file_is_refused(hf_dir, tmp_path):
    import shutil

    folder = tmp_path / "named"
    shutil.copytree(hf_dir, folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "transformers_weights": "weights.bin"}))
    (folder / "weights.bin").write_bytes(b"not read")
    with pytest.raises(CounterclipError, match="refusing to load hf model .*weights.bin"):
        counterclip.load_model("hf:" + str(folder))


def test_safetensors_beside_a_pickle_loads_from_the_safetensors(hf_dir, tmp_path):
    import shutil

    folder = tmp_path / "both"
    shutil.copytree(hf_dir, folder)
    marker = tmp_path / "pwned"
    torch.save({"payload": _Payload(marker)}, folder / "pytorch_model.bin")
    model = counterclip.load_model("hf:" + str(folder))
    assert model.image_size == 32 and not marker.exists()
