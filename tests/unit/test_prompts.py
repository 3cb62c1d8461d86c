"""Prompt styles (clip / reference), `counterclip datasets` and `datasets show`, ImageNet's 999-class reference set."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from counterclip.cli import main
from counterclip.data import get_dataset, paper
from counterclip.data.prompts import PROMPT_STYLES, prompt_set
from counterclip.errors import CounterclipError

ROOT = Path(__file__).resolve().parents[2]
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


def test_zeroshot_keeps_both_prompt_styles_and_states_them(tmp_path):
    from counterclip.evaluation.zeroshot import run_zeroshot

    for c in paper.load_metadata("eurosat")["raw_classes"]:
        _png(tmp_path / "eurosat" / "2750" / c / "a.jpg")
    recs = {}
    for style in ("clip", "reference"):
        with pytest.warns(UserWarning, match="allow-partial"):
            recs[style] = run_zeroshot("tiny-fmnist", "eurosat", tmp_path / "out", data_root=tmp_path,
                                       prompts=style, allow_partial=True)
    assert recs["clip"]["_path"] != recs["reference"]["_path"]  # the second style did not overwrite the first
    assert len(list((tmp_path / "out").glob("zeroshot_*.json"))) == 2
    for style, rec in recs.items():
        assert rec["prompts"] == style and rec["precision"] == "fp32" and rec["activation"] == "gelu"
        assert rec["source"] == "torchvision" and rec["count_check"]["status"] == "partial (allowed)"


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


REFERENCE = Path(os.environ.get("COUNTERCLIP_REFERENCE_REPO",
                                "/work/.mirror/Sxing2+CLIP-Test-time-Counterattacks/repo"))  # a snapshot, if any


def test_packaged_reference_sets_regenerate_from_the_reference_code(tmp_path):
    """Dev-only: the shipped JSON equals what tools/make_reference_prompts.py derives from a snapshot of the
    reference repository (skipped without the snapshot or pycountry)."""
    pytest.importorskip("pycountry")
    if not REFERENCE.is_dir():
        pytest.skip("no snapshot of the reference repository")
    res = subprocess.run(["git", "-C", str(REFERENCE), "archive", "HEAD", "code/replace/datasets", "support"],
                         capture_output=True)
    if res.returncode != 0:
        pytest.skip("reference snapshot unreadable")
    import io
    import tarfile

    tarfile.open(fileobj=io.BytesIO(res.stdout)).extractall(tmp_path, filter="data")
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import make_reference_prompts as gen
    finally:
        sys.path.pop(0)
    built = gen.build(tmp_path)
    assert set(built) == set(KEYS)
    for key, rec in built.items():
        shipped = json.loads((ROOT / "src/counterclip/data/metadata/reference" /
                              (key.replace("-", "_") + ".json")).read_text())
        assert shipped == rec, key
    # and the sentences match the reference's own string rules where it states them as literals
    assert [t.format(c) for c in built["pcam"]["classnames"] for t in built["pcam"]["templates"]] == \
        gen.literal(tmp_path / "code/replace/datasets/pcam.py", "clip_prompts")
    assert os.path.exists(tmp_path / "support" / "imagenet_refined_labels.json")


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_reference_dataset_classes_tokenize_our_sentences(tmp_path):
    """Dev-only, the strongest check: the reference repository's own dataset classes, run on fake trees built from
    our packaged class identifiers, form exactly the sentences `--prompts reference` gives (their `clip_prompts`,
    else code/utils.py's `template.format(name)` over `.classes` / `.clip_categories`)."""
    pytest.importorskip("pycountry")
    pytest.importorskip("scipy")
    import importlib.util
    import io
    import tarfile

    import numpy as np
    import scipy.io

    if not REFERENCE.is_dir():
        pytest.skip("no snapshot of the reference repository")
    res = subprocess.run(["git", "-C", str(REFERENCE), "archive", "HEAD", "code/replace/datasets"],
                         capture_output=True)
    if res.returncode != 0:
        pytest.skip("reference snapshot unreadable")
    src = tmp_path / "src"
    tarfile.open(fileobj=io.BytesIO(res.stdout)).extractall(src, filter="data")

    def ref(name):
        spec = importlib.util.spec_from_file_location(f"_ref_ds_{name}", src / "code/replace/datasets" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    def raw(key):
        return paper.load_metadata(key)["raw_classes"]

    root = tmp_path / "data"
    for c in ["BACKGROUND_Google"] + raw("caltech101"):
        _touch(root / "caltech101" / "101_ObjectCategories" / c / "image_0001.jpg")
    for c in raw("caltech256"):
        _touch(root / "caltech256" / "256_ObjectCategories" / c / f"{c[:3]}_0001.jpg")
    dtd_lines = [f"{c}/{c}_0001.jpg" for c in raw("dtd")]
    (root / "dtd" / "dtd" / "images").mkdir(parents=True)
    (root / "dtd" / "dtd" / "labels").mkdir(parents=True)
    (root / "dtd" / "dtd" / "labels" / "test1.txt").write_text("\n".join(dtd_lines) + "\n")
    air = root / "fgvc-aircraft-2013b" / "data"
    air.mkdir(parents=True)
    (air / "variants.txt").write_text("\n".join(raw("fgvc-aircraft")) + "\n")
    (air / "images_variant_test.txt").write_text(f"0001 {raw('fgvc-aircraft')[0]}\n")
    (root / "food-101" / "images").mkdir(parents=True)
    (root / "food-101" / "meta").mkdir(parents=True)
    (root / "food-101" / "meta" / "test.json").write_text(json.dumps({c: [f"{c}/1"] for c in raw("food101")}))
    for code in prompt_set("country211", "reference")["raw_classes"]:
        _touch(root / "country211" / "test" / code / "a.jpg")
    for c in raw("eurosat"):
        _touch(root / "eurosat" / "2750" / c / "a.jpg")
    pets = root / "oxford-iiit-pet"
    (pets / "images").mkdir(parents=True)
    (pets / "annotations").mkdir(parents=True)
    (pets / "annotations" / "test.txt").write_text(
        "".join(f"{c.replace(' ', '_')}_1 {i + 1} 1 1\n" for i, c in enumerate(raw("oxford-pets"))))
    cars = root / "stanford_cars"
    (cars / "devkit").mkdir(parents=True)
    (cars / "cars_test").mkdir()
    scipy.io.savemat(cars / "devkit" / "cars_meta.mat", {"class_names": np.array(raw("stanford-cars"), dtype=object)})
    ann = np.zeros(2, dtype=[("fname", "O"), ("class", "O")])  # two: squeeze_me makes one a 0-d array
    ann[0], ann[1] = ("00001.jpg", 1), ("00002.jpg", 2)
    scipy.io.savemat(cars / "cars_test_annos_withlabels.mat", {"annotations": ann})

    (root / "SUN397").mkdir()  # ClassName.txt lines as the release writes them ("/a/apartment_building/outdoor")
    (root / "SUN397" / "ClassName.txt").write_text(
        "".join(f"/{c[0]}/{c}\n" for c in prompt_set("sun397", "reference")["classnames"]))
    built = {
        "sun397": ref("sun397").SUN397(str(root)),
        "caltech101": ref("caltech").Caltech101(str(root), target_type="category"),
        "caltech256": ref("caltech").Caltech256(str(root)),
        "dtd": ref("dtd").DTD(str(root), split="test"),
        "fgvc-aircraft": ref("fgvc_aircraft").FGVCAircraft(str(root), split="test"),
        "food101": ref("food101").Food101(str(root), split="test"),
        "country211": ref("country211").Country211(str(root), split="test"),
        "eurosat": ref("eurosat").EuroSAT(str(root)),
        "oxford-pets": ref("oxford_iiit_pet").OxfordIIITPet(str(root), split="test"),
        "stanford-cars": ref("stanford_cars").StanfordCars(str(root), split="test"),
        "flowers102": ref("flowers102").Flowers102,  # its prompts are a class attribute's list, formatted in __init__
    }
    for key, ds in built.items():
        ours = [t.format(c) for c in prompt_set(key, "reference")["classnames"]
                for t in prompt_set(key, "reference")["templates"]]
        if key == "flowers102":
            theirs = ["A photo of a {}, a type of flower.".format(c.lower().replace("_", " ").replace("-", " "))
                      for c in ds._classes]  # flowers102.py's __init__ rule over its _classes (needs .mat files)
        elif hasattr(ds, "clip_prompts"):
            theirs = list(ds.clip_prompts)
        else:  # code/utils.py get_text_prompts_val: the default template over .classes or .clip_categories
            names = ds.classes if hasattr(ds, "classes") else ds.clip_categories
            theirs = ["This is a photo of a {}.".format(c) for c in names]
        assert ours == theirs, key
    assert ref("pcam").PCAM.clip_prompts == sentences({"classnames": prompt_set("pcam", "reference")["classnames"],
                                                        "templates": prompt_set("pcam", "reference")["templates"]})
