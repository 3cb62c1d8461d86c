"""Webdataset mirrors (issue 9): CLIP_benchmark's layout read back sample for sample, the same numbers as the
same images in an imagefolder, registry fallback, integrity counts, offline --download failing in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from counterclip.data import get_dataset, routes, wds
from counterclip.errors import CounterclipError

from wds_mirror import FORMATS, build_mirror, encode, fmnist_images


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    return build_mirror(tmp_path_factory.mktemp("wds"))


def test_mirror_reads_every_format_and_matches_the_imagefolder(mirror):
    copy, folder = mirror
    assert int((copy / "test" / "nshards.txt").read_text()) >= 3
    w = get_dataset("wds/mini", data_root=copy, image_size=28)
    f = get_dataset("imagefolder", data_root=folder, image_size=28)
    assert len(w) == len(f) == 24
    assert w.classnames == f.classnames and w.templates == f.templates == ["a photo of a {}."]
    assert {s.ext for s in w.dataset.samples} == set(FORMATS)
    for i in range(len(w)):
        (xw, yw), (xf, yf) = w.dataset[i], f.dataset[i]
        assert yw == yf and torch.equal(xw, xf), i
    assert w.source == "wds:clip-benchmark/wds_mini" and w.split == "test"
    assert w.record_fields()["count_check"]["status"] == "unknown"  # not a registry dataset's mirror


def _records(out: Path) -> dict:
    recs = {}
    for p in out.rglob("*.json"):
        if ".state" in p.parts:
            continue
        rec = json.loads(p.read_text())
        recs[(rec["attack"]["name"] if isinstance(rec["attack"], dict) else rec["attack"], rec["defense"]["name"])] = \
            (rec, np.load(p.with_suffix(".npz")))
    return recs


def _records_list(out: Path) -> list:
    return [(json.loads(p.read_text()), None) for p in out.rglob("*.json") if ".state" not in p.parts]


def test_eval_on_the_mirror_gives_the_imagefolders_per_sample_results(mirror, tmp_path):
    from counterclip.cli import main

    copy, folder = mirror
    common = ["eval", "--model", "tiny-fmnist", "--attack", "none", "--defense", "none", "--batch-size", "10"]
    assert main([*common, "--dataset", "wds/mini", "--data-root", str(copy), "--output", str(tmp_path / "w")]) == 0
    assert main([*common, "--dataset", "imagefolder", "--data-root", str(folder),
                 "--output", str(tmp_path / "f")]) == 0
    (rw, zw), = _records(tmp_path / "w").values()
    (rf, zf), = _records(tmp_path / "f").values()
    for k in ("index", "label", "clean_correct", "robust_correct"):
        assert np.array_equal(zw[k], zf[k]), k
    assert rw["metrics"]["clean_acc"] == rf["metrics"]["clean_acc"] and rw["metrics"]["n_samples"] == 24
    assert rw["dataset"] == "wds/mini" and rw["source"] == "wds:clip-benchmark/wds_mini"
    assert rw["dataset_size"] == 24 and rw["split"] == "test" and rf["source"] == "imagefolder"


def test_rerun_after_the_download_resumes_instead_of_recomputing(mirror, tmp_path, monkeypatch):
    """The run that downloads a mirror and the re-run that finds it in the cache (or adds --allow-partial on a
    complete copy) read the same data: the second must reuse the first's cells, not compute a second set."""
    from counterclip.cli import main

    copy, _ = mirror
    found = wds.locate
    monkeypatch.setattr(wds, "locate", lambda *a: (found(*a)[0], "downloaded into the Hugging Face cache"))
    argv = ["eval", "--model", "tiny-fmnist", "--attack", "none", "--defense", "none", "--dataset", "wds/mini",
            "--data-root", str(copy), "--output", str(tmp_path)]
    assert main(argv) == 0
    monkeypatch.setattr(wds, "locate", found)
    assert main([*argv, "--allow-partial"]) == 0
    recs = _records_list(tmp_path)
    assert len(recs) == 1 and recs[0][0]["mirror"]["found"] == "downloaded into the Hugging Face cache"
    assert len(list((tmp_path / ".state").rglob("clean-*"))) == 1


def test_allow_partial_also_covers_the_calibration_split(tmp_path):
    """--tau-thres auto calibrates on the train split: with --allow-partial, a train split missing a shard is used
    (the user accepted partial copies), not silently swapped for held-out test images."""
    from counterclip.cli import main
    from counterclip.evaluation.config import EvalConfig
    from counterclip.evaluation.grid import GridRunner

    copy, _ = build_mirror(tmp_path, n=12, per_shard=6)
    build_mirror(tmp_path / "t", n=14, per_shard=7, split="train")
    (tmp_path / "t" / "wds_mini" / "train").rename(copy / "train")
    (copy / "train" / "1.tar").unlink()
    with pytest.warns(UserWarning, match="allow-partial"):
        assert main(["eval", "--model", "tiny-fmnist", "--dataset", "wds/mini", "--data-root", str(copy),
                     "--attack", "none", "--defense", "ttc", "--tau-thres", "auto", "--allow-partial",
                     "--output", str(tmp_path / "out")]) == 0
    (rec, _), = _records(tmp_path / "out").values()
    assert rec["defense"]["params"]["calibration"]["source"] == "wds/mini train split"
    # without it, the error says why the train split was not used (it said "no train split here")
    with pytest.raises(CounterclipError, match=r"no usable train split here \(.*1 of 2 shards missing"):
        GridRunner(EvalConfig(output=str(tmp_path / "o2"), datasets=["wds/mini"], data_root=str(copy),
                              defenses=["ttc"], tau_thres="auto"), log=lambda *a: None).run()


def test_parent_folder_serves_several_mirrors_and_ignores_other_copies(mirror, tmp_path):
    copy, _ = mirror
    assert wds.local_copy("mini", copy.parent) == copy  # DIR/wds_mini
    assert wds.local_copy("mini", copy) == copy  # the copy itself
    assert wds.local_copy("cars", copy) is None  # another dataset's copy is not taken for wds/cars
    assert wds.repo_id("vtab/cifar10") == "clip-benchmark/wds_vtab-cifar10"  # CLIP_benchmark's dataset_cleaned


def _registry_mirror(root: Path, key: str, n=6, reverse=False, drop_shard=False, names=None):
    """A mirror copy of a registry dataset's mirror under ROOT/wds_<name>, with the registry's raw class names
    (optionally in reversed label order) or the given NAMES."""
    import webdataset

    from counterclip.data.paper import load_metadata

    m = routes.mirror_of(key)
    meta = load_metadata(key)
    names = list(names or meta.get("raw_classes") or meta["classnames"])
    if reverse:
        names = names[::-1]
    images, _ = fmnist_images(n)
    folder = root / f"wds_{wds.cleaned(m['dataset'][4:])}"
    (folder / m["split"]).mkdir(parents=True)
    with webdataset.ShardWriter(str(folder / m["split"] / "%d.tar"), maxcount=2, verbose=0) as sink:
        for j in range(n):
            sink.write({"__key__": "s%07d" % j, "webp": encode(images[j], "webp"), "cls": j % len(names)})
        nshards = sink.shard
    (folder / m["split"] / "nshards.txt").write_text(f"{nshards}\n")
    (folder / "classnames.txt").write_text("\n".join(names) + "\n")
    if drop_shard:
        (folder / m["split"] / "1.tar").unlink()
    return folder


def test_registry_dataset_falls_back_to_its_mirror_with_counts_checked(tmp_path):
    from counterclip.data.paper import load_metadata

    _registry_mirror(tmp_path, "stanford-cars", reverse=True)
    with pytest.raises(CounterclipError, match="6 samples where 8041 are expected") as e:
        get_dataset("stanford-cars", data_root=tmp_path, image_size=28)
    assert "\n" not in str(e.value) and "--allow-partial" in str(e.value)
    with pytest.warns(UserWarning, match="allow-partial"):
        data = get_dataset("stanford-cars", data_root=tmp_path, image_size=28, allow_partial=True)
    assert data.name == "stanford-cars" and data.source == "wds:clip-benchmark/wds_cars" and data.split == "test"
    names = load_metadata("stanford-cars")["classnames"]
    assert data.classnames == names  # the registry's label order: the mirror's labels are mapped by name
    assert [y for _, y in (data.dataset[i] for i in range(6))] == [len(names) - 1 - j for j in range(6)]
    assert data.templates == load_metadata("stanford-cars")["templates"]
    rec = data.record_fields()
    assert rec["count_check"] == {"found": 6, "expected": 8041, "basis": "derived", "status": "partial (allowed)",
                                  "allow_partial": True}
    assert "split_note" not in rec  # the mirror's split is the paper's


# The class names the real mirrors hold where they are neither ours nor the dataset's identifiers: CLIP_benchmark's
# exporter writes vtab/pcam's from its en_classnames.json, vtab/flowers' from tensorflow_datasets' label names
# (oxford_flowers102 _NAMES; these two are the only ones of its 102 that differ from ours beyond case and dashes).
PCAM_MIRROR_NAMES = ["lymph node", "lymph node containing metastatic tumor tissue"]
FLOWERS_TFDS_DIFFERENT = {59: "pink-yellow dahlia?", 92: "ball moss"}


@pytest.mark.parametrize("key", ["pcam", "flowers102"])
def test_mirrors_with_their_exporters_class_names_load_under_the_registry_key(tmp_path, key):
    """`--dataset pcam --download` takes the VTAB mirror: its class names must map onto ours (they did not)."""
    from counterclip.data.paper import load_metadata

    ours = load_metadata(key)["classnames"]
    if key == "pcam":
        names = PCAM_MIRROR_NAMES
        try:  # the yardstick, where installed: the names the exporter writes
            import clip_benchmark

            cb = json.loads((Path(clip_benchmark.__file__).parent / "datasets" / "en_classnames.json").read_text())
            assert cb["pcam"] == names
        except ImportError:
            pass
    else:
        names = [FLOWERS_TFDS_DIFFERENT.get(i, c) for i, c in enumerate(ours)]
    _registry_mirror(tmp_path, key, n=4, names=names[::-1])  # reversed: the mapping is by name, not position
    with pytest.warns(UserWarning, match="allow-partial"):
        data = get_dataset(key, data_root=tmp_path, image_size=28, allow_partial=True)
    assert data.source.startswith("wds:") and data.classnames == ours
    assert [y for _, y in (data.dataset[i] for i in range(4))] == [len(ours) - 1 - j % len(ours) for j in range(4)]
    with pytest.warns(UserWarning):
        ref = get_dataset(key, data_root=tmp_path, image_size=28, allow_partial=True, prompts="reference")
    assert len(ref.classnames) == len(ours)


def test_mirror_with_a_different_split_is_marked(tmp_path):
    _registry_mirror(tmp_path, "eurosat")
    with pytest.warns(UserWarning):
        data = get_dataset("eurosat", data_root=tmp_path, image_size=28, allow_partial=True)
    assert data.source == "wds:clip-benchmark/wds_vtab-eurosat"
    assert "VTAB" in data.record_fields()["split_note"]
    with pytest.warns(UserWarning):  # the same mirror under its own name says so too
        assert "split_note" in get_dataset("wds/vtab/eurosat", data_root=tmp_path, image_size=28,
                                           allow_partial=True).record_fields()

    from counterclip.cli import main
    from counterclip.report import build_report

    out = tmp_path / "out"
    with pytest.warns(UserWarning):
        assert main(["eval", "--model", "tiny-fmnist", "--dataset", "eurosat", "--data-root", str(tmp_path),
                     "--allow-partial", "--output", str(out)]) == 0
    (rec, _), = _records(out).values()
    assert rec["source"] == "wds:clip-benchmark/wds_vtab-eurosat" and rec["split"] == "test"
    assert rec["dataset_size"] == 6 and "VTAB" in rec["split_note"]
    assert rec["count_check"]["status"] == "partial (allowed)" and rec["count_check"]["expected"] == 5400
    build_report(out)
    md = (out / "results.md").read_text()
    assert "eurosat ³" in md and "³ not the paper's data" in md and "VTAB" in md and "--allow-partial" in md

    # the same key from another source (the torchvision layout now present) never reuses the mirror's cache
    from counterclip.data.paper import load_metadata

    images, _ = fmnist_images(10)
    for j, c in enumerate(load_metadata("eurosat")["raw_classes"]):
        p = tmp_path / "eurosat" / "2750" / c / f"{c}_1.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode(images[j], "jpg"))
    with pytest.warns(UserWarning):
        assert main(["eval", "--model", "tiny-fmnist", "--dataset", "eurosat", "--data-root", str(tmp_path),
                     "--allow-partial", "--output", str(out)]) == 0
    sources = sorted(r["source"] for r, _ in _records_list(out))
    assert sources == ["torchvision", "wds:clip-benchmark/wds_vtab-eurosat"]
    assert len(list((out / ".state" / "eurosat").glob("clean-*"))) == 2


def test_clip_benchmarks_vtab_ids_with_another_split_mean_the_mirror(tmp_path, capsys):
    """CLIP_benchmark's vtab/eurosat and vtab/caltech101 are VTAB's splits (5,400 and 6,084 images), not our whole
    datasets (27,000 and 8,677): the id reads the mirror that holds that split, never the whole dataset."""
    from counterclip.cli import main
    from counterclip.data.aliases import canonical

    assert canonical("vtab/caltech101") == "wds/vtab/caltech101" and canonical("vtab/eurosat") == "wds/vtab/eurosat"
    assert canonical("vtab/pets") == "oxford-pets"  # VTAB's test split is the official one: our key
    _registry_mirror(tmp_path, "eurosat")
    for p in load_raw("eurosat"):  # the whole dataset in torchvision's layout too: the id must not take it
        p = tmp_path / "eurosat" / "2750" / p / f"{p}_1.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode(fmnist_images(1)[0][0], "jpg"))
    with pytest.warns(UserWarning):
        data = get_dataset("vtab/eurosat", data_root=tmp_path, image_size=28, allow_partial=True)
    assert data.name == "wds/vtab/eurosat" and data.source == "wds:clip-benchmark/wds_vtab-eurosat"
    assert "VTAB" in data.record_fields()["split_note"] and len(data) == 6
    assert main(["datasets", "show", "vtab/caltech101"]) == 2
    assert "wds/vtab/caltech101" in capsys.readouterr().err


def load_raw(key):
    from counterclip.data.paper import load_metadata

    return load_metadata(key)["raw_classes"]


@pytest.mark.parametrize("name", ["wds/", "wds/../x", "wds/a//b", "wds/-x", "wds/a b"])
def test_a_malformed_mirror_name_is_one_line(tmp_path, name):
    with pytest.raises(CounterclipError, match="not a mirror name") as e:
        get_dataset(name, data_root=tmp_path)
    assert "\n" not in str(e.value)
    assert wds.valid_name("vtab/cifar10") and wds.valid_name("fgvc_aircraft") and wds.valid_name("imagenet-a")


def test_a_missing_shard_fails_in_one_line_unless_allowed(tmp_path):
    folder = _registry_mirror(tmp_path, "stanford-cars", drop_shard=True)
    with pytest.raises(CounterclipError, match="1 of 3 shards missing") as e:
        get_dataset("wds/cars", data_root=folder, image_size=28)
    assert "\n" not in str(e.value)
    with pytest.warns(UserWarning):
        data = get_dataset("wds/cars", data_root=folder, image_size=28, allow_partial=True)
    assert len(data) == 4 and data.record_fields()["mirror"]["missing_shards"] == ["1.tar"]
    shard = folder / "test" / "0.tar"  # a half-downloaded shard: one line, even with --allow-partial
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CounterclipError, match="0.tar: unreadable shard"):
        get_dataset("wds/cars", data_root=folder, image_size=28, allow_partial=True)


def test_shard_files_are_closed(mirror):
    import copy as copy_module
    import pickle

    data = get_dataset("wds/mini", data_root=mirror[0], image_size=28)
    ds = data.dataset
    for i in (0, 10, 23):  # three shards
        ds[i]
    opened = list(ds._opened)
    assert len(opened) == 3 and not any(f.closed for f in opened)
    clone = pickle.loads(pickle.dumps(ds))  # a DataLoader worker's copy opens its own files
    assert clone[0][1] == ds[0][1] and clone._opened and copy_module.copy(ds) is not None
    ds.close()
    assert all(f.closed for f in opened) and ds[5][1] == data.dataset[5][1]  # reopens after close
    clone.close()
    ds.close()


def test_an_undecodable_image_in_a_shard_is_named_in_one_line(tmp_path):
    import webdataset

    (tmp_path / "test").mkdir()
    images, _ = fmnist_images(2)
    with webdataset.TarWriter(str(tmp_path / "test" / "0.tar")) as sink:
        sink.write({"__key__": "good", "png": encode(images[0], "png"), "cls": 0})
        sink.write({"__key__": "bad", "webp": b"RIFF\x00\x00\x00\x00WEBPnot an image", "cls": 1})
    (tmp_path / "test" / "nshards.txt").write_text("1\n")
    (tmp_path / "classnames.txt").write_text("a\nb\n")
    data = get_dataset("wds/damaged", data_root=tmp_path, image_size=28)
    assert data.dataset[0][1] == 0
    with pytest.raises(CounterclipError, match=r"0.tar: sample 'bad' \(webp, 24 bytes\) is not a decodable") as e:
        data.dataset[1]
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable endpoint"])
def test_download_without_network_or_cache_fails_fast_naming_the_repo(tmp_path, monkeypatch, capsys, connections,
                                                                      how):
    from huggingface_hub import constants

    from counterclip.cli import main

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:  # an endpoint nobody answers (``connections`` refuses it): the model layer's probe puts the client offline
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    rc = main(["eval", "--model", "tiny-fmnist", "--dataset", "wds/cars", "--download", "--data-root",
               str(tmp_path / "data"), "--output", str(tmp_path / "out")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1, err
    assert "clip-benchmark/wds_cars" in err[0] and str(tmp_path / "hf") in err[0]
    # offline: nothing tried; unreachable: the one probe, then no retry loop (the hub client's own retries
    # would try the endpoint again and again, with backoff)
    assert connections == ([] if how == "HF_HUB_OFFLINE" else [("127.0.0.1", 9)]), connections


def test_every_registry_dataset_has_a_route_and_the_docs_show_it():
    from counterclip.data import paper

    docs = (Path(__file__).resolve().parents[2] / "docs" / "datasets.md").read_text()
    assert set(routes.table()["datasets"]) == set(paper.SPECS)
    for key, r in routes.table()["datasets"].items():
        assert r["torchvision"]["status"] in ("works", "broken", "manual", "fragile"), key
        assert "test" in r["counts"] or {"val", "all"} & set(r["counts"]), key
        m = r["mirror"]
        if m is not None:
            assert m["repo"] == wds.repo_id(m["dataset"][len("wds/"):]), key
            assert routes.registry_key_for(m["dataset"][len("wds/"):]) == key
            assert f"`{m['dataset']}`" in docs and m["repo"] in docs, key


def test_reference_prompts_on_a_mirror_drop_what_the_reference_drops(tmp_path):
    """ImageNet's reference prompt set drops n03710637 with its images: a mirror read with them does the same."""
    from counterclip.data.paper import load_metadata
    from counterclip.data.prompts import prompt_set

    import webdataset

    meta = load_metadata("imagenet")
    names = list(meta["classnames"])  # the mirror's classnames.txt holds CLIP's curated names
    gone = meta["raw_classes"].index("n03710637")
    labels = [0, gone, gone + 1, len(names) - 1]
    images, _ = fmnist_images(len(labels))
    folder = tmp_path / "wds_imagenet1k"
    (folder / "test").mkdir(parents=True)
    with webdataset.ShardWriter(str(folder / "test" / "%d.tar"), maxcount=10, verbose=0) as sink:
        for j, lab in enumerate(labels):
            sink.write({"__key__": "s%07d" % j, "jpg": encode(images[j], "jpg"), "cls": lab})
    (folder / "test" / "nshards.txt").write_text("1\n")
    (folder / "classnames.txt").write_text("\n".join(names) + "\n")
    with pytest.warns(UserWarning):
        data = get_dataset("imagenet", data_root=tmp_path, image_size=28, prompts="reference", allow_partial=True)
    ref = prompt_set("imagenet", "reference")
    assert data.classnames == ref["classnames"] and len(data.classnames) == 999
    assert [y for _, y in (data.dataset[i] for i in range(len(data)))] == [0, gone, len(names) - 2]
    assert data.record_fields()["count_check"]["found"] == 4  # counted before the reference's drop
    with pytest.warns(UserWarning):
        clip = get_dataset("wds/imagenet1k", data_root=tmp_path, image_size=28, allow_partial=True)
    assert clip.classnames == names and len(clip) == 4  # the mirror as it is


def test_datasets_command_shows_routes_and_local_copies(tmp_path, capsys):
    from counterclip.cli import main

    _registry_mirror(tmp_path, "stanford-cars")
    assert main(["datasets", "--data-root", str(tmp_path), "--routes", "stanford-cars", "caltech256"]) == 0
    out = capsys.readouterr().out
    assert "torchvision --download: broken" in out and "clip-benchmark/wds_cars" in out
    assert f"mirror copy {tmp_path / 'wds_cars'}" in out and "caltech256" in out and "none in CLIP_benchmark" in out
    assert main(["datasets", "--routes", "cars"]) == 0  # CLIP_benchmark's id, as `datasets show` takes it
    assert capsys.readouterr().out.startswith("stanford-cars\n")
    assert main(["datasets", "--routes", "nosuch"]) == 2  # one error line, not a "no route data" line and rc 0
    assert "unknown dataset with routes 'nosuch'" in capsys.readouterr().err
    assert main(["datasets", "--data-root", str(tmp_path), "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["stanford-cars"]["mirror"]["status"] == "copy" and rows["caltech256"]["mirror"] is None
    # the list says which route --download takes where it is the mirror
    assert rows["stanford-cars"]["mirror"]["fetched_by_download"] and rows["pcam"]["mirror"]["fetched_by_download"]
    assert not rows["cifar10"]["mirror"]["fetched_by_download"]
    assert main(["datasets", "--data-root", str(tmp_path)]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.strip()}
    assert "wds/cars, which --download fetches (torchvision's download is broken)" in lines["stanford-cars"]
    assert "which --download fetches" not in lines["cifar10"]
    assert lines["pcam"].count("--download fetches") == 1 and "wds/vtab/pcam" in lines["pcam"]


def test_download_of_a_split_the_mirror_lacks_stays_with_torchvision(tmp_path, monkeypatch):
    """PCAM's --download takes the mirror for its test split; its train split (only torchvision has it) must
    still be downloaded by torchvision, not silently not at all."""
    from huggingface_hub import constants

    from counterclip.data import sources
    from counterclip.errors import DatasetNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    asked = []

    def build(split, data_root, download, *args, **kwargs):
        asked.append((split, download))
        raise DatasetNotFoundError(f"no {split}")

    for split in ("train", "val"):
        with pytest.raises(DatasetNotFoundError):
            sources.registry_dataset("pcam", build, split, tmp_path, True, 28, None, False)
    with pytest.raises(CounterclipError, match="could not fetch the webdataset mirror clip-benchmark/wds_vtab-pcam"):
        sources.registry_dataset("pcam", build, "test", tmp_path, True, 28, None, False)  # offline: no fetch
    assert asked == [("train", True), ("val", True), ("test", False)]


def test_a_cached_hub_copy_is_used_offline(mirror, tmp_path, monkeypatch):
    """The mirror in the Hugging Face cache layout (datasets--clip-benchmark--wds_<name>/snapshots/<rev>, refs/main)
    is found with --download and no network, without touching --data-root."""
    import shutil

    from huggingface_hub import constants

    copy, _ = mirror
    repo = tmp_path / "hf" / "datasets--clip-benchmark--wds_mini"
    rev = "0" * 40
    shutil.copytree(copy, repo / "snapshots" / rev)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for download in (False, True):
        data = get_dataset("wds/mini", data_root=tmp_path / "empty", download=download, image_size=28)
        assert len(data) == 24 and data.extra["mirror"]["found"] == "Hugging Face cache"
    assert not (tmp_path / "empty").exists()

    # an interrupted download (a shard absent from the snapshot): --download completes it, it does not stop there
    lost = repo / "snapshots" / rev / "test" / "2.tar"
    lost.unlink()
    with pytest.raises(CounterclipError, match="1 of 4 shards missing"):
        get_dataset("wds/mini", data_root=tmp_path / "empty", image_size=28)
    fetched = []

    def fetch(name, split):  # huggingface_hub's snapshot_download fetches the files the cache lacks
        fetched.append((name, split))
        shutil.copy(copy / "test" / "2.tar", lost)
        return repo / "snapshots" / rev

    monkeypatch.setattr(wds, "fetch", fetch)
    data = get_dataset("wds/mini", data_root=tmp_path / "empty", download=True, image_size=28)
    assert fetched == [("mini", "test")] and len(data) == 24
    assert data.extra["mirror"]["found"] == "downloaded into the Hugging Face cache"
