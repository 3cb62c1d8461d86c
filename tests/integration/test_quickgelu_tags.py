"""QuickGELU through the user's path: the `openai` tag builds a QuickGELU model whose robust towers follow, and
records state the activation and the prompt style (the yardstick against OpenAI's own model code:
tests/reference/test_quickgelu.py). The random OpenAI-layout checkpoint is tests/conftest.py's ``openai_ckpt``."""

import json
import warnings

import pytest
import torch

import counterclip
from counterclip.models.openclip_backend import activation_of

PROMPTS = ["This is a photo of a person.", "A photo of a am general hummer suv.", "A photo I took in Timor Leste."]


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.slow
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
    r = json.loads(path.read_text())
    assert r["activation"] == "gelu" and r["prompts"] == "clip"
