"""Dev-only yardsticks for `--prompts reference`: the shipped prompt sets against the reference repository's own
code (a snapshot named by COUNTERCLIP_REFERENCE_REPO; skipped without it, or without pycountry / scipy)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from counterclip.data import paper
from counterclip.data.prompts import prompt_set

ROOT = Path(__file__).resolve().parents[2]
KEYS = sorted(paper.SPECS)  # the 16 paper datasets + TinyImageNet


def sentences(out):
    return [t.format(c) for c in out["classnames"] for t in out["templates"]]


def test_packaged_reference_sets_regenerate_from_the_reference_code(tmp_path, reference_repo):
    """Dev-only: the shipped JSON equals what tools/make_reference_prompts.py derives from a snapshot of the
    reference repository (skipped without the snapshot or pycountry)."""
    pytest.importorskip("pycountry")
    res = subprocess.run(["git", "-C", str(reference_repo), "archive", "HEAD", "code/replace/datasets", "support"],
                         capture_output=True)
    assert res.returncode == 0, res.stderr.decode()  # a snapshot was named: unreadable is an error
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


def test_reference_dataset_classes_tokenize_our_sentences(tmp_path, reference_repo):
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

    res = subprocess.run(["git", "-C", str(reference_repo), "archive", "HEAD", "code/replace/datasets"],
                         capture_output=True)
    assert res.returncode == 0, res.stderr.decode()  # a snapshot was named: unreadable is an error
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
