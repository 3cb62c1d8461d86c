"""QuickGELU: OpenAI weights under the preset's model give the reference code's own embeddings (spec section 7).

One random ViT-B/32 checkpoint in OpenAI layout (tests/conftest.py's ``openai_ckpt``, about 150M parameters,
rounded to fp16 as OpenAI's release is) is built once per session. The reference model is the reference TTC
repository's own ``code/replace/model.py`` when COUNTERCLIP_REFERENCE_REPO names a snapshot, and OpenAI's model
code from the ``clip-anytorch`` package (the same ``build_model``) otherwise; skipped when neither is there.
"""

import importlib.util
import io
import subprocess
import tarfile
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import counterclip
from counterclip.models.clip_model import OPENAI_MEAN, OPENAI_STD

PROMPTS = ["This is a photo of a person.", "A photo of a am general hummer suv.", "A photo I took in Timor Leste."]


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _reference_sources(tmp_path_factory, snapshot):
    """(label, model.py, simple_tokenizer.py, bpe vocab) for each yardstick on this machine."""
    out = []
    if snapshot is not None:
        res = subprocess.run(["git", "-C", str(snapshot), "archive", "HEAD", "code/replace"], capture_output=True)
        assert res.returncode == 0, res.stderr.decode()  # a snapshot was named: unreadable is an error
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
def yardsticks(tmp_path_factory, reference_snapshot):
    found = _reference_sources(tmp_path_factory, reference_snapshot)
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


@pytest.mark.slow
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


