"""What the fine-tuning presets fix besides the optimiser (finetune.md sections 1, 5, 8): the data transform
(ttc TeCoA/PMG-AFT Resize(256) bilinear, FARE and robustvlm Resize(224) bicubic, the toy untouched), the prompt
form (TTC lineage with the reference clean names; RobustVLM's lower-cased names without a period) and the
held-out split (TinyImageNet: TTC's eval_files list; elsewhere a seeded 10 % per class)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from counterclip.data import describe_transform, get_dataset, pil_transform
from counterclip.data.heldout import heldout_files, heldout_list
from counterclip.data.paper import load_metadata
from counterclip.data.prompts import prompt_set, refine_classname
from counterclip.errors import CounterclipError, UnknownNameError
from counterclip.finetune import data as fdata
from counterclip.finetune.config import resolve, resume_key
from counterclip.finetune.trainer import Trainer


def _image(h=64, w=80, seed=0):
    rgb = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(rgb)


@pytest.mark.parametrize("preset,method,resize,interpolation", [
    ("ttc", "tecoa", 256, "bilinear"), ("ttc", "pmg-aft", 256, "bilinear"), ("ttc", "fare", 224, "bicubic"),
    ("robustvlm", "tecoa", 224, "bicubic"), ("robustvlm", "fare", 224, "bicubic")])
def test_presets_fix_the_resize_and_its_filter(preset, method, resize, interpolation, tmp_path):
    cfg = resolve(tmp_path, method, preset)
    assert (cfg["image_size"], cfg["resize"], cfg["interpolation"]) == (224, resize, interpolation)
    x = pil_transform(cfg["image_size"], cfg["resize"], cfg["interpolation"])(_image())
    assert x.shape == (3, 224, 224) and 0 <= float(x.min()) and float(x.max()) <= 1
    # the 64x80 image scaled by the filter PIL is given, then the centre cut out, by hand
    short = resize
    big = _image().resize((round(80 * short / 64), short), {"bilinear": Image.BILINEAR,
                                                             "bicubic": Image.BICUBIC}[interpolation])
    left, top = (big.width - 224 + 1) // 2, (big.height - 224 + 1) // 2
    want = torch.from_numpy(np.array(big.crop((left, top, left + 224, top + 224)))).permute(2, 0, 1) / 255
    torch.testing.assert_close(x, want.float(), atol=1 / 255 + 1e-6, rtol=0)


def test_bicubic_is_not_bilinear_and_only_non_default_filters_change_the_description():
    a, b = (pil_transform(224, 224, how)(_image()) for how in ("bilinear", "bicubic"))
    assert (a - b).abs().max() > 0.01
    assert describe_transform(224, 256) == "Resize(256)+CenterCrop(224)"  # as before: eval cache keys hold
    assert describe_transform(224, 224, "bicubic") == "Resize(224, bicubic)+CenterCrop(224)"
    with pytest.raises(UnknownNameError, match="interpolation"):
        pil_transform(224, 256, "lanczos")
    with pytest.raises(UnknownNameError, match="interpolation"):
        resolve("/tmp/never", "tecoa", "toy", interpolation="nearest")


def test_imagefolder_takes_the_filter(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        _image(seed=ord(c)).save(tmp_path / c / "0.png")
    data = get_dataset("imagefolder", data_root=tmp_path, image_size=32, resize=40, interpolation="bicubic")
    assert data.preprocess == "Resize(40, bicubic)+CenterCrop(32)"
    x = data.dataset[0][0]
    torch.testing.assert_close(x, pil_transform(32, 40, "bicubic")(_image(seed=ord("a"))))


def test_the_toy_stays_at_its_native_size_and_keeps_its_resume_key(tmp_path):
    cfg = resolve(tmp_path, "tecoa", "toy")
    assert cfg["image_size"] is None and cfg["resize"] is None and cfg["refine_names"] is False
    data = get_dataset("fashion-mnist", split="test", image_size=28, resize=cfg["resize"],
                       interpolation="bicubic")
    assert data.dataset[0][0].shape == (3, 28, 28) and data.preprocess.startswith("native")
    # settings added later are out of the key at their neutral value: runs begun before them still resume
    assert resume_key(cfg) == resume_key({k: v for k, v in cfg.items() if k not in ("interpolation",
                                                                                     "refine_names")})
    assert resume_key(cfg) != resume_key({**cfg, "interpolation": "bicubic"})


def test_ttc_prompts_are_the_reference_clean_names_with_a_period(tmp_path):
    cfg = resolve(tmp_path, "tecoa", "ttc")
    assert (cfg["prompts"], cfg["template"], cfg["refine_names"]) == ("reference", "This is a photo of a {}.",
                                                                      False)
    ps = prompt_set("tinyimagenet", "reference")
    assert len(ps["classnames"]) == 200 and "European fire salamander" in ps["classnames"]
    assert cfg["template"].format(ps["classnames"][1]) == "This is a photo of a European fire salamander."


def test_robustvlm_prompts_have_no_period_and_refined_names(tmp_path):
    for method in ("tecoa", "fare"):
        cfg = resolve(tmp_path, method, "robustvlm")
        assert (cfg["template"], cfg["refine_names"]) == ("This is a photo of a {}", True)
    assert refine_classname("T-shirt/top") == "t shirt top"
    assert refine_classname("Great_White-Shark") == "great white shark"
    names = [refine_classname(n) for n in prompt_set("imagenet", "clip")["classnames"]]
    assert len(names) == 1000 and not any(ch in n for n in names for ch in "_-/") and all(n == n.lower()
                                                                                         for n in names)


def test_the_trainer_refines_the_names_when_asked(tmp_path):
    tr = Trainer(resolve(tmp_path, "tecoa", "toy", refine_names=True, template="This is a photo of a {}",
                         limit=64, batch_size=32, epochs=1, eval_limit=8), log=lambda *a: None)
    assert tr.loaded.classnames[0] == "T-shirt/top" and tr.classnames[0] == "t shirt top"
    assert tr.classnames == [refine_classname(n) for n in tr.loaded.classnames[:5]]
    assert tr.template == "This is a photo of a {}"
    assert tr.heldout_rule == "seeded 10% per class" and len(tr.held_idx) == 600 * 5


def test_tinyimagenet_heldout_list_is_ttcs_fifty_files_per_class():
    rec = heldout_list("tinyimagenet")
    wnids = load_metadata("tinyimagenet")["raw_classes"]
    assert sorted(rec["files"]) == sorted(wnids) and rec["count"] == 10000
    assert all(len(ns) == 50 == len(set(ns)) and all(0 <= n < 500 for n in ns) for ns in rec["files"].values())
    files = heldout_files("tinyimagenet")
    assert len(files) == 10000 and f"{wnids[0]}_{rec['files'][wnids[0]][0]}.JPEG" in files
    assert heldout_files("tinyimagenet", "val") is None and heldout_files("cifar10") is None


class _Folder:
    """An ImageFolder stand-in: ``samples`` (path, label) in Tiny ImageNet's train layout, no images."""

    def __init__(self, wnids, per_class=500):
        self.samples = [(f"/d/train/{w}/images/{w}_{n}.JPEG", c) for c, w in enumerate(wnids)
                        for n in range(per_class)]
        self.targets = [s[1] for s in self.samples]

    def __len__(self):
        return len(self.samples)


def test_the_listed_files_are_exactly_the_heldout_split():
    wnids = sorted(load_metadata("tinyimagenet")["raw_classes"])[:3]
    ds, files = _Folder(wnids), heldout_files("tinyimagenet")
    mask = fdata.listed_mask(ds, files, "tinyimagenet")
    labels = fdata.labels_of(ds)
    train, held = fdata.split(labels, [0, 2], seed=5, listed=mask)
    names = [ds.samples[i][0].rsplit("/", 1)[1] for i in held.tolist()]
    assert len(held) == 100 and all(n in files for n in names)
    assert set(labels[held].tolist()) == {0, 2} and len(train) == 900
    assert not any(ds.samples[i][0].rsplit("/", 1)[1] in files for i in train.tolist())
    again, held2 = fdata.split(labels, [0, 2], seed=9, listed=mask)  # the list, not the seed, decides
    assert torch.equal(held, held2) and torch.equal(train, again)
    limited, held3 = fdata.split(labels, [0, 2], seed=5, limit=40, listed=mask)
    assert len(limited) == 40 and set(limited.tolist()) <= set(train.tolist()) and torch.equal(held, held3)


def test_a_list_that_does_not_match_the_data_fails_in_one_line():
    files = heldout_files("tinyimagenet")
    with pytest.raises(CounterclipError, match="none of the 10000 held-out files"):
        fdata.listed_mask(_Folder(["n99999999"], 10), files, "dataset tinyimagenet")
    with pytest.raises(CounterclipError, match="does not expose its file names"):
        fdata.listed_mask(SimpleNamespace(__len__=lambda: 0), files, "dataset tinyimagenet")
    wnids = sorted(load_metadata("tinyimagenet")["raw_classes"])[:1] + ["n99999999"]
    ds = _Folder(wnids, 500)
    with pytest.raises(CounterclipError, match="class 1 has none of its images in the held-out list"):
        fdata.split(fdata.labels_of(ds), [0, 1], seed=0, listed=fdata.listed_mask(ds, files, "x"))


def test_the_trainer_uses_the_list_of_the_dataset_it_loaded():
    wnids = sorted(load_metadata("tinyimagenet")["raw_classes"])[:2]
    stub = SimpleNamespace(loaded=SimpleNamespace(name="tinyimagenet", dataset=_Folder(wnids, 100)))
    mask, rule = Trainer._heldout_list(stub)
    assert rule.startswith("listed: metadata/heldout/tinyimagenet.json") and "eval_files" in rule
    assert int(mask.sum()) == sum(n < 100 for w in wnids for n in heldout_list("tinyimagenet")["files"][w])
    stub.loaded.name = "cifar10"
    assert Trainer._heldout_list(stub) == (None, "seeded 10% per class")


def test_the_packaged_list_is_valid_json_with_one_row_per_class():
    from importlib import resources

    text = resources.files("counterclip.data").joinpath("metadata", "heldout", "tinyimagenet.json").read_text()
    assert json.loads(text)["split"] == "train" and len(text.splitlines()) == 200 + 9
