"""QuickGELU: OpenAI weights under the preset's model give the reference code's own embeddings (spec section 7).

One random ViT-B/32 checkpoint in OpenAI layout (about 150M parameters, rounded to fp16 as OpenAI's release is)
is built once per module; every test reuses it. The reference model is the reference TTC repository's own
``code/replace/model.py`` when a snapshot is on this machine, and OpenAI's model code from the ``clip-anytorch``
package (the same ``build_model``) otherwise; each is skipped cleanly when absent.
"""

import importlib.util
import io
import os
import subprocess
import tarfile
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import counterclip
from counterclip.models.clip_model import OPENAI_MEAN, OPENAI_STD
from counterclip.models.openclip_backend import activation_of

REFERENCE = Path(os.environ.get("COUNTERCLIP_REFERENCE_REPO",
                                "/work/.mirror/Sxing2+CLIP-Test-time-Counterattacks/repo"))  # a snapshot, if any
PROMPTS = ["This is a photo of a person.", "A photo of a am general hummer suv.", "A photo I took in Timor Leste."]


@pytest.fixture(scope="module")
def openai_ckpt(tmp_path_factory):
    """A random ViT-B-32 state dict in OpenAI's key layout (open_clip's CLIP keeps it), values fp16-exact."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    sd = {}
    for k, v in model.state_dict().items():
        if ".ln_" in k or k.startswith("ln_") or k.endswith("bias"):
            v = v + 0.02 * torch.randn_like(v)  # LayerNorms and biases too, so none sits at a trivial value
        sd[k] = v.half().float()
    path = tmp_path_factory.mktemp("ckpt") / "vit-b-32-openai-layout.pt"
    torch.save(sd, path)
    return path


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _reference_sources(tmp_path_factory):
    """(label, model.py, simple_tokenizer.py, bpe vocab) for each yardstick on this machine."""
    out = []
    if REFERENCE.is_dir():
        res = subprocess.run(["git", "-C", str(REFERENCE), "archive", "HEAD", "code/replace"], capture_output=True)
        if res.returncode == 0:
            d = tmp_path_factory.mktemp("reference")
            tarfile.open(fileobj=io.BytesIO(res.stdout)).extractall(d, filter="data")
            r = d / "code" / "replace"
            out.append(("reference TTC code/replace/model.py", r / "model.py", r / "simple_tokenizer.py",
                        r / "bpe_simple_vocab_16e6.txt.gz"))
    spec = importlib.util.find_spec("clip")
    if spec is not None and spec.submodule_search_locations:
        c = Path(list(spec.submodule_search_locations)[0])
        if (c / "model.py").is_file():  # file-level import: clip/__init__ needs pkg_resources
            out.append(("clip-anytorch clip/model.py", c / "model.py", c / "simple_tokenizer.py",
                        c / "bpe_simple_vocab_16e6.txt.gz"))
    return out


@pytest.fixture(scope="module")
def yardsticks(tmp_path_factory):
    found = _reference_sources(tmp_path_factory)
    if not found:
        pytest.skip("neither a snapshot of the reference TTC code nor clip-anytorch is on this machine")
    return found[:1]  # the reference's own code when present (its prompt_len=0 path is OpenAI's model)


def _tokenize(tok, texts, context_length=77):
    """OpenAI CLIP's tokenize: <start> + BPE + <end>, zero-padded to 77."""
    sot, eot = tok.encoder["<|startoftext|>"], tok.encoder["<|endoftext|>"]
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = [sot] + tok.encode(t) + [eot]
        out[i, :len(ids)] = torch.tensor(ids)
    return out


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_preset_model_matches_the_reference_model(openai_ckpt, yardsticks):
    ours = counterclip.load_model("ViT-B-32-quickgelu", pretrained=str(openai_ckpt))
    assert ours.activation == "quick_gelu"
    torch.manual_seed(1)
    x = torch.rand(2, 3, 224, 224)
    mean, std = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        img, txt = ours.encode_image(x), ours.encode_text(PROMPTS)
        for label, model_py, tok_py, bpe in yardsticks:
            ref_model = _load_module(f"_ref_model_{abs(hash(label))}", model_py)
            tok = _load_module(f"_ref_tok_{abs(hash(label))}", tok_py).SimpleTokenizer(str(bpe))
            sd = torch.load(openai_ckpt, weights_only=True)
            params = ref_model.build_model.__code__.co_varnames[:ref_model.build_model.__code__.co_argcount]
            ref = (ref_model.build_model(sd, 0) if "prompt_len" in params else ref_model.build_model(sd)).float()
            ref.eval()
            img_ref = ref.encode_image(((x - mean) / std), None) if "prompt_len" in params else \
                ref.encode_image((x - mean) / std)
            txt_ref = ref.encode_text(_tokenize(tok, PROMPTS))
            print(f"{label}: image {_rel(img, img_ref):.2e}, text {_rel(txt, txt_ref):.2e} relative")
            assert _rel(img, img_ref) < 1e-5, label
            assert _rel(txt, txt_ref) < 1e-5, label
            # the reference's in-forward bicubic resize to 224 is the identity on the preset's 224-px images
            # (Resize(256)+CenterCrop(224) in the loader), so the comparison above is its whole pipeline
            assert torch.equal(F.interpolate(x, size=(224, 224), mode="bicubic"), x)
            del ref
    # the same weights under plain GELU are a different network, and the user is told so in one warning
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        gelu = counterclip.load_model("ViT-B-32", pretrained=str(openai_ckpt))
    quick = [str(m.message) for m in w if "QuickGELU" in str(m.message)]
    assert len(quick) == 1 and "ViT-B-32-quickgelu" in quick[0] and "\n" not in quick[0]
    assert gelu.activation == "gelu"
    with torch.no_grad():
        gi, gt = _rel(gelu.encode_image(x), img), _rel(gelu.encode_text(PROMPTS), txt)
    print(f"plain GELU on the same weights: image {gi:.2e}, text {gt:.2e} relative")
    assert gi > 1e-3 and gt > 1e-3


def test_openai_tag_builds_quickgelu_and_robust_towers_follow(openai_ckpt, tmp_path, monkeypatch):
    import open_clip.factory

    looked_up = []

    def local_weights(cfg, *args, **kwargs):  # open_clip's weight lookup, pointed at a local file: no network
        looked_up.append(cfg.get("hf_hub") or cfg.get("url"))
        return str(openai_ckpt)

    monkeypatch.setattr(open_clip.factory, "download_pretrained", local_weights)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sd = torch.load(openai_ckpt, weights_only=True)
    vision = {k[len("visual."):]: v.clone() for k, v in sd.items() if k.startswith("visual.")}
    vision["proj"] = vision["proj"] * 0.5  # a "finetuned" tower that differs from the base one
    vc = tmp_path / "tecoa.pth.tar"
    torch.save({"epoch": 10, "vision_encoder_state_dict": vision}, vc)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        model = counterclip.load_model("ViT-B-32", pretrained="openai", vision_checkpoint=str(vc))
    assert looked_up and "openai" in looked_up[0]
    assert not [m for m in w if "QuickGELU" in str(m.message)]  # neither open_clip's mismatch warning nor ours
    assert model.activation == "quick_gelu"
    assert activation_of(model.visual) == activation_of(model.base_visual) == "quick_gelu"  # TTC's tau tower too
    ref = counterclip.load_model("ViT-B-32-quickgelu", pretrained=str(openai_ckpt))
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert _rel(model.encode_text(PROMPTS), ref.encode_text(PROMPTS)) < 1e-6
        assert _rel(model.encode_image_base(x), ref.encode_image(x)) < 1e-6
        assert _rel(model.encode_image(x), 0.5 * ref.encode_image(x)) < 1e-5


def test_records_state_the_activation_and_prompt_style(tmp_path):
    from counterclip.evaluation.config import EvalConfig
    from counterclip.evaluation.grid import GridRunner
    from counterclip.evaluation.zeroshot import run_zeroshot

    rec = run_zeroshot("tiny-fmnist", "fashion-mnist", tmp_path / "zs", limit=16, batch_size=16)
    assert rec["activation"] == "gelu" and rec["prompts"] == "clip"  # the tiny model was trained with GELU
    cfg = EvalConfig(output=str(tmp_path / "grid"), datasets=["fashion-mnist"], attacks=["none"], defenses=["none"],
                     limit=8, batch_size=8, probe_size=4)
    [path] = [p for p in GridRunner(cfg, log=lambda *a: None).run() if p.suffix == ".json"]
    import json

    r = json.loads(path.read_text())
    assert r["activation"] == "gelu" and r["prompts"] == "clip"
