"""Prompt styles (clip / reference), `counterclip datasets` and `datasets show`, ImageNet's 999-class reference set."""

import json

import pytest

from counterclip.cli import main
from counterclip.data import get_dataset, paper
from counterclip.data.prompts import PROMPT_STYLES, prompt_set
from counterclip.errors import CounterclipError

KEYS = sorted(paper.SPECS)  # the 16 paper datasets + TinyImageNet


def show(capsys, key, style="reference"):
    assert main(["datasets", "show", key, "--prompts", style, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def sentences(out):
    return [t.format(c) for c in out["classnames"] for t in out["templates"]]


@pytest.mark.parametrize("style", PROMPT_STYLES)
def test_every_paper_dataset_has_both_styles(style):
    for key in KEYS:
        ps = prompt_set(key, style)
        assert ps["classnames"] and ps["templates"] and ps["source"]
        assert all(isinstance(c, str) and c for c in ps["classnames"])
        n = 999 if (key, style) == ("imagenet", "reference") else paper.load_metadata(key)["num_classes"]
        assert len(ps["classnames"]) == n, key
        if ps.get("raw_classes") is not None:
            assert len(ps["raw_classes"]) == n


def test_show_json_shape_and_text(capsys):
    out = show(capsys, "cifar10", "clip")
    assert {"dataset", "prompts", "classnames", "templates"} <= set(out)
    assert out["dataset"] == "cifar10" and out["prompts"] == "clip" and len(out["classnames"]) == 10
    assert main(["datasets", "show", "caltech101", "--prompts", "reference"]) == 0
    text = capsys.readouterr().out
    assert "person" in text and "tie" in text  # the reference bug is said plainly
    assert show(capsys, "pets", "clip")["dataset"] == "oxford-pets"  # CLIP_benchmark's id, as in eval


def test_show_into_a_closed_pipe_is_quiet(monkeypatch, capsys):
    """`counterclip datasets show imagenet | head`: the reader leaving is no error line."""
    import sys

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            raise OSError("not a real file here")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["datasets", "show", "imagenet"]) == 141
    assert capsys.readouterr().err == ""


def test_reference_edge_cases(capsys):
    c101 = show(capsys, "caltech101")
    assert c101["classnames"][:3] == ["person", "person", "Leopards"]  # the Faces / Faces_easy tie
    assert "car_side" in c101["classnames"] and "tie" in c101["notes"]
    assert "aquarium_fish" in show(capsys, "cifar100")["classnames"]  # raw, underscores kept
    sun = show(capsys, "sun397")["classnames"]
    assert "apartment_building/outdoor" in sun and "airplane_cabin" in sun and len(sun) == 397
    cars = show(capsys, "stanford-cars")
    assert sentences(cars)[0] == "A photo of a am general hummer suv."  # no year, lower-cased
    air = show(capsys, "fgvc-aircraft")["classnames"]
    assert air[0] == "boeing 707-320" and "a300b4" in air and "dc-10" in air  # 'boeing ' for 7x7, hyphens kept
    assert show(capsys, "eurosat")["classnames"] == [
        "annual crop land", "a forest", "brushland or shrubland", "a highway or a road", "industrial buildings",
        "pasture land", "permanent crop land", "residential buildings", "a river", "a sea or a lake"]
    assert sentences(show(capsys, "pcam")) == ["This is a photo of a healthy lymph node tissue.",
                                               "This is a photo of a lymph node tumor tissue."]
    countries = show(capsys, "country211")["classnames"]
    assert countries[0] == "Andorra" and "Timor Leste" in countries and countries[-1] == "Zimbabwe"
    assert "Kosovo" in countries and "Bolivia, Plurinational State of" in countries  # pycountry names, case kept
    assert "hard leaved pocket orchid" in show(capsys, "flowers102")["classnames"]  # '-' -> ' '
    dtd = show(capsys, "dtd")
    assert "polka dotted" in dtd["classnames"] and dtd["templates"] == ["A surface with a {} texture."]
    assert "polka-dotted" in show(capsys, "dtd", "clip")["classnames"]
    food = show(capsys, "food101")
    assert sentences(food)[0] == "A photo of apple pie, a type of food."
    imnet = show(capsys, "imagenet")
    assert len(imnet["classnames"]) == 999 and imnet["classnames"][0] == "tench"
    assert prompt_set("imagenet", "reference")["drop_classes"] == ["n03710637"]
    assert "n03710637" not in prompt_set("imagenet", "reference")["raw_classes"]
    assert show(capsys, "tinyimagenet")["classnames"][0] == "goldfish"
    for key in ("cifar10", "stl10"):  # plain template, torchvision names
        assert show(capsys, key)["templates"] == ["This is a photo of a {}."]


def test_no_reference_prompts_is_one_line(capsys):
    assert main(["datasets", "show", "fashion-mnist", "--prompts", "reference"]) == 2
    err = capsys.readouterr().err
    assert "no reference prompts" in err and err.count("\n") == 1
    with pytest.raises(CounterclipError, match="reference"):
        get_dataset("fashion-mnist", prompts="reference")
    assert main(["datasets", "show", "no-such-set"]) == 2
    assert "valid:" in capsys.readouterr().err


def _png(path, color=(255, 0, 0)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), color).save(path)


def test_imagenet_reference_drops_the_duplicate_class_and_renumbers(tmp_path):
    wnids = paper.load_metadata("imagenet")["raw_classes"]
    val = tmp_path / "imagenet" / "val"
    for w in wnids:  # ImageFolder needs every class folder non-empty
        _png(val / w / f"{w}_1.JPEG")
    _png(val / "n03710637" / "n03710637_2.JPEG")
    clip = get_dataset("imagenet", data_root=tmp_path, image_size=8, allow_partial=True)  # a 1001-image tree
    ref = get_dataset("imagenet", data_root=tmp_path, image_size=8, prompts="reference", allow_partial=True)
    assert len(clip) == 1001 and len(clip.classnames) == 1000 and clip.prompts == "clip"
    assert len(ref) == 999 and len(ref.classnames) == 999 and ref.prompts == "reference"
    assert ref.extra["dropped_classes"] == ["n03710637"] and ref.extra["prompts"] == "reference"
    assert ref.extra["count_check"]["found"] == 1001  # counted as published, before the reference's drop
    dropped = wnids.index("n03710637")
    targets = [t for _, t in ref.dataset.samples]
    assert targets == list(range(999))  # one image per kept class, renumbered without a gap
    after = wnids[dropped + 1]
    assert ref.dataset.samples[dropped][0].endswith(f"{after}_1.JPEG")
    refined = prompt_set("imagenet", "reference")["classnames"]
    assert ref.classnames == refined and ref.classnames[dropped] == refined[dropped]


def test_datasets_lists_status_and_how(tmp_path, capsys):
    for c in paper.load_metadata("eurosat")["raw_classes"]:
        _png(tmp_path / "eurosat" / "2750" / c / "a.jpg")
    assert main(["datasets", "--data-root", str(tmp_path), "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(KEYS) | {"fashion-mnist", "imagefolder"} <= set(rows)
    assert rows["eurosat"]["on_disk"] == "yes" and rows["cifar10"]["on_disk"] == "no"
    assert rows["imagenet"]["how"] and str(tmp_path) in rows["imagenet"]["how"]
    assert rows["imagefolder"]["on_disk"] == "n/a"
    assert rows["caltech101"]["prompts"] == ["clip", "reference"] and rows["fashion-mnist"]["prompts"] == ["clip"]
    assert sum(r["paper"] for r in rows.values()) == 16 and not rows["tinyimagenet"]["paper"]
    assert main(["datasets", "--data-root", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "eurosat" in text and "stanford-cars" in text and "cannot download" in text
    assert list((tmp_path).iterdir()) == [tmp_path / "eurosat"]  # nothing created


def test_eval_prompts_flag_and_paper_preset():
    from counterclip.cli import build_parser
    from counterclip.cli_commands import eval_config

    parse = build_parser().parse_args
    paper_cfg = eval_config(parse(["eval", "--preset", "paper", "--output", "x"]))
    assert paper_cfg.prompts == "reference" and paper_cfg.model == "ViT-B-32-quickgelu"
    assert paper_cfg.pretrained == "openai"
    assert paper_cfg.datasets == paper.PAPER_DATASETS + ["tinyimagenet"]  # its own row, outside the average
    assert eval_config(parse(["eval", "--preset", "paper", "--prompts", "clip", "--output", "x"])).prompts == "clip"
    assert eval_config(parse(["eval", "--dataset", "cifar10", "--output", "x"])).prompts == "clip"
    assert parse(["zeroshot", "--dataset", "cifar10", "--prompts", "reference", "--output", "x"]).prompts == \
        "reference"
