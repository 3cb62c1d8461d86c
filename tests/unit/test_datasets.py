"""Dataset registry: packaged class names / templates, missing-data errors, and loading from tiny fake trees."""

import json

import pytest
import torch

from counterclip.data import BUILDERS, get_dataset, list_datasets, paper
from counterclip.errors import CounterclipError, UnknownNameError

EXPECTED_CLASSES = {
    "cifar10": 10, "cifar100": 100, "stl10": 10, "imagenet": 1000, "caltech101": 101, "caltech256": 257,
    "oxford-pets": 37, "flowers102": 102, "fgvc-aircraft": 100, "stanford-cars": 196, "sun397": 397,
    "country211": 211, "food101": 101, "eurosat": 10, "dtd": 47, "pcam": 2, "tinyimagenet": 200,
}
PAPER_TEMPLATES = {  # spec §3
    "caltech256": "A photo of a {}.", "oxford-pets": "A photo of a {}, a type of pet.",
    "flowers102": "A photo of a {}, a type of flower.", "fgvc-aircraft": "A photo of a {}, a type of aircraft.",
    "stanford-cars": "A photo of a {}.", "country211": "A photo I took in {}.",
    "food101": "A photo of {}, a type of food.", "eurosat": "A centered satellite photo of {}.",
    "dtd": "A surface with a {} texture.",
}


def test_registry_lists_the_paper_datasets_and_the_existing_ones():
    keys = list_datasets()
    assert keys == sorted(BUILDERS)
    assert set(EXPECTED_CLASSES) <= set(keys)
    assert {"fashion-mnist", "imagefolder"} <= set(keys)
    assert all(k == k.lower() for k in keys)
    assert len(paper.PAPER_DATASETS) == 16 and "tinyimagenet" not in paper.PAPER_DATASETS


@pytest.mark.parametrize("key", sorted(EXPECTED_CLASSES))
def test_packaged_classnames_and_templates(key):
    meta = paper.load_metadata(key)
    names = meta["classnames"]
    assert len(names) == EXPECTED_CLASSES[key] == meta["num_classes"]
    assert all(isinstance(n, str) and n.strip() == n and n for n in names)
    assert meta["templates"] and all("{}" in t for t in meta["templates"])
    assert meta["templates"] == [PAPER_TEMPLATES.get(key, "This is a photo of {}." if key == "pcam"
                                                     else "This is a photo of a {}.")]
    assert meta["classnames_source"]
    raw = meta.get("raw_classes")
    if raw is not None:  # used to check the label order of the data on disk: must be unambiguous
        assert len(raw) == len(names)
        assert len({paper._norm(r) for r in raw}) == len(raw)


def test_pcam_prompts_are_the_papers_two_sentences():
    meta = paper.load_metadata("pcam")
    prompts = [t.format(n) for n in meta["classnames"] for t in meta["templates"]]
    assert prompts == ["This is a photo of healthy lymph node tissue.", "This is a photo of lymph node tumor tissue."]


def test_spot_check_class_lists():
    assert paper.load_metadata("cifar10")["classnames"][0] == "airplane"
    assert "aquarium fish" in paper.load_metadata("cifar100")["classnames"]  # '_' -> ' '
    food = paper.load_metadata("food101")
    assert food["raw_classes"] == sorted(food["raw_classes"])  # torchvision sorts Food101's classes
    assert paper.load_metadata("imagenet")["raw_classes"][0] == "n01440764"
    tiny = paper.load_metadata("tinyimagenet")
    assert tiny["raw_classes"] == sorted(tiny["raw_classes"]) and tiny["classnames"][0] == "goldfish"
    assert paper.load_metadata("caltech256")["classnames"][-1] == "clutter"


def test_unknown_key_lists_valid_keys():
    with pytest.raises(UnknownNameError) as e:
        get_dataset("no-such-dataset")
    msg = str(e.value)
    assert "no-such-dataset" in msg and "cifar10" in msg and "tinyimagenet" in msg and "imagefolder" in msg


@pytest.mark.parametrize("key", sorted(EXPECTED_CLASSES))
def test_missing_dataset_is_one_clear_line(key, tmp_path, connections):
    with pytest.raises(CounterclipError) as e:
        get_dataset(key, data_root=tmp_path, download=False)
    assert connections == []  # without --download: no download tried, not even a probe
    msg = str(e.value)
    assert "\n" not in msg
    assert str(tmp_path) in msg and key in msg
    assert "--download" in msg or "http" in msg
    assert list(tmp_path.iterdir()) == []  # nothing created, nothing downloaded


def test_not_downloadable_dataset_says_so(tmp_path, monkeypatch):
    from huggingface_hub import constants

    # torchvision cannot fetch these; --download goes to the webdataset mirror, which fails offline in one line
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for key, repo in (("imagenet", "clip-benchmark/wds_imagenet1k"), ("stanford-cars", "clip-benchmark/wds_cars")):
        with pytest.raises(CounterclipError, match=repo) as e:
            get_dataset(key, data_root=tmp_path / "data", download=True)
        assert "\n" not in str(e.value)
    with pytest.raises(CounterclipError, match="cannot"):  # without --download: torchvision's how-to + the mirror
        get_dataset("stanford-cars", data_root=tmp_path / "data")


def test_default_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv(paper.DATA_ENV, str(tmp_path / "env-root"))
    assert paper.default_data_root(None) == tmp_path / "env-root"
    with pytest.raises(CounterclipError, match="env-root"):
        get_dataset("cifar10")
    monkeypatch.delenv(paper.DATA_ENV)
    assert str(paper.default_data_root(None)).endswith(".cache/counterclip/datasets")


def test_bad_split_is_a_clear_error(tmp_path):
    with pytest.raises(CounterclipError, match="splits"):
        get_dataset("cifar10", split="validation", data_root=tmp_path)


def test_torchvision_errors_become_one_line(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(CounterclipError) as e:
        get_dataset("cifar10", data_root=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "--download" in msg


@pytest.mark.parametrize("key", ["cifar10", "tinyimagenet"])
def test_a_failed_download_says_what_to_do_by_hand_not_pass_download(tmp_path, monkeypatch, key):
    from urllib.error import URLError

    def offline(*a, **k):
        raise URLError("Name or service not known")

    from dataclasses import replace

    monkeypatch.setitem(paper.SPECS, key, replace(paper.SPECS[key], make=offline))  # no network
    with pytest.raises(CounterclipError, match="download/load failed") as e:
        get_dataset(key, data_root=tmp_path, download=True)
    msg = str(e.value)
    assert "\n" not in msg and "pass --download" not in msg and "http" in msg and str(tmp_path) in msg


def _png(path, color=(255, 0, 0), size=(20, 16)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_eurosat_loads_from_a_tiny_tree(tmp_path):
    raw = paper.load_metadata("eurosat")["raw_classes"]
    for i, c in enumerate(raw):
        _png(tmp_path / "eurosat" / "2750" / c / f"{c}_1.jpg", color=(i * 20, 0, 0))
    data = get_dataset("eurosat", data_root=tmp_path, image_size=8, allow_partial=True)
    assert len(data) == 10 and data.split == "all" and data.preprocess == "Resize(8)+CenterCrop(8)"
    assert data.classnames == paper.load_metadata("eurosat")["classnames"]
    x, y = data.dataset[3]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert y == 3
    assert get_dataset("eurosat", data_root=tmp_path, image_size=8, resize=10, allow_partial=True).preprocess == \
        "Resize(10)+CenterCrop(8)"


def test_tinyimagenet_val_layout_with_annotations(tmp_path):
    wnids = paper.load_metadata("tinyimagenet")["raw_classes"]
    val = tmp_path / "tiny-imagenet-200" / "val"
    lines = []
    for i, w in enumerate([wnids[5], wnids[0], wnids[199]]):
        _png(val / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t10\t10\n")
    (val / "val_annotations.txt").write_text("".join(lines))
    data = get_dataset("tinyimagenet", data_root=tmp_path, image_size=8, allow_partial=True)
    assert data.split == "val" and len(data) == 3 and len(data.classnames) == 200
    assert [data.dataset[i][1] for i in range(3)] == [5, 0, 199]
    assert data.classnames[0] == "goldfish"


def test_classnames_follow_the_on_disk_label_order(tmp_path):
    # Caltech256 with folder names as shipped: the packaged list must match torchvision's categories.
    raw = paper.load_metadata("caltech256")["raw_classes"]
    for c in raw:
        _png(tmp_path / "caltech256" / "256_ObjectCategories" / c / f"{c[:3]}_0001.jpg")
    data = get_dataset("caltech256", data_root=tmp_path, image_size=8, allow_partial=True)
    assert len(data) == 257 and data.classnames == paper.load_metadata("caltech256")["classnames"]
    assert data.dataset[0][1] == 0


def test_wrong_class_set_on_disk_is_reported(tmp_path):
    for c in ["n01440764", "n01443537"]:
        _png(tmp_path / "imagenet" / "val" / c / "a.JPEG")
    with pytest.raises(CounterclipError, match="2 classes"):
        get_dataset("imagenet", data_root=tmp_path, image_size=8)


def test_fashion_mnist_still_loads():
    data = get_dataset("fashion-mnist", split="test")
    assert len(data) == 10000 and len(data.classnames) == 10
    x, y = data.dataset[0]
    assert x.shape == (3, 28, 28) and isinstance(y, int)


def test_imagefolder_skips_unreadable_files_with_a_warning(tmp_path):
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / "cat" / "b.png", color=(0, 255, 0))
    _png(tmp_path / "dog_house" / "c.png", color=(0, 0, 255))
    bad = tmp_path / "dog_house" / "broken.png"
    bad.write_bytes(b"this is not a png")
    with pytest.warns(UserWarning, match="broken.png"):
        data = get_dataset("imagefolder", data_root=tmp_path, image_size=8)
    assert data.classnames == ["cat", "dog house"] and len(data) == 3
    x, y = data.dataset[2]
    assert x.shape == (3, 8, 8) and y == 1


def test_metadata_is_valid_json_package_data():
    from importlib import resources

    files = sorted(p.name for p in resources.files("counterclip.data").joinpath("metadata").iterdir()
                   if p.name.endswith(".json"))
    assert len(files) == len(EXPECTED_CLASSES)
    for name in files:
        json.loads(resources.files("counterclip.data").joinpath("metadata", name).read_text())
