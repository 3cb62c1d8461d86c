"""CLIP_benchmark-shaped results: our records carry its fields, `counterclip build` flattens them into one CSV,
and its dataset ids are aliases of our keys (its own `build` reading them: tests/reference)."""

import csv
import json

import pytest
from helpers import records, small_grid_run

from counterclip.cli import main
from counterclip.data import get_dataset
from counterclip.data.aliases import canonical
from counterclip.evaluation.clip_benchmark import pretrained_label


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return small_grid_run(tmp_path_factory.mktemp("cb"))


def test_records_carry_clip_benchmark_fields(run_dir):
    recs = records(run_dir)
    assert len(recs) == 4  # a CLIP_benchmark id (fashion_mnist) ran as our key
    for r in recs:
        assert r["dataset"] == "fashion-mnist"
        assert r["pretrained"] == "tiny-fmnist" and r["pretrained_arg"] is None
        assert r["task"] == "zeroshot_classification" and r["language"] == "en"
        m = r["metrics"]
        assert m["acc1"] == (m["clean_acc"] if r["attack"]["name"] == "none" else m["robust_acc"])


def test_counterclip_build_flattens_records_recursively(run_dir, tmp_path, capsys):
    out = tmp_path / "results.csv"
    assert main(["build", str(run_dir), "--output", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and "4 records" in capsys.readouterr().out
    for col in ("dataset", "model", "pretrained", "model_fullname", "acc1", "attack", "eps_str", "defense",
                "threat_model", "clean_acc", "robust_acc", "n_samples"):
        assert col in rows[0], col
    by_key = {(r["attack"], r["defense"]): r for r in rows}
    assert set(by_key) == {("none", "none"), ("none", "rn"), ("pgd", "none"), ("pgd", "rn")}
    rec = {(r["attack"]["name"], r["defense"]["name"]): r for r in records(run_dir)}
    for key, row in by_key.items():
        assert float(row["acc1"]) == rec[key]["metrics"]["acc1"]
    assert main(["build", str(tmp_path / "nothing"), "--output", str(out)]) == 2  # one-line error
    capsys.readouterr()
    # a folder, its subfolder and one of its files: each record once
    one = sorted((run_dir / "fashion-mnist").glob("*.json"))[0]
    assert main(["build", str(run_dir), str(run_dir / "fashion-mnist"), str(one), "--output", str(out)]) == 0
    assert len(list(csv.DictReader(out.open()))) == 4
    (tmp_path / "empty").mkdir()
    assert main(["build", str(tmp_path / "empty"), "--output", str(out)]) == 2
    assert "counterclip: error: build: no result records" in capsys.readouterr().err


def test_clip_benchmark_dataset_ids_are_aliases():
    for cb_id, ours in {"imagenet1k": "imagenet", "pets": "oxford-pets", "cars": "stanford-cars",
                        "flowers": "flowers102", "fgvc_aircraft": "fgvc-aircraft", "vtab/pets": "oxford-pets",
                        "cifar10": "cifar10", "sun397": "sun397", "fashion-mnist": "fashion-mnist"}.items():
        assert canonical(cb_id) == ours
    assert get_dataset("Fashion_MNIST").name == "fashion-mnist"


def test_pretrained_is_always_a_string(tmp_path):
    weights = tmp_path / "ckpt.safetensors"
    weights.write_bytes(b"")
    assert pretrained_label("ViT-B-32", "openai") == "openai"
    assert pretrained_label("ViT-B-32", str(weights)) == "ckpt.safetensors"
    assert pretrained_label("tiny-fmnist", None) == "tiny-fmnist"
    assert pretrained_label("hf:" + str(tmp_path), None) == tmp_path.name
    assert pretrained_label("hf:openai/clip-vit-base-patch32", None) == "openai/clip-vit-base-patch32"


def test_build_names_itself_when_it_skips_a_damaged_record(run_dir, tmp_path):
    import shutil

    from counterclip.report.benchmark import collect

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(".state"))
    victim = sorted((copy / "fashion-mnist").glob("*.json"))[0]
    data = json.loads(victim.read_text())
    data["metrics"]["acc1"] = 1.0  # edited after the fact: its seal no longer matches
    victim.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=r"^build: skipped damaged record .*" + victim.name):
        rows = collect([copy])
    assert len(rows) == 3
