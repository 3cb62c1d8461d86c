"""Which route a dataset comes from, and the integrity check on what was found.

- ``wds/<name>``: a CLIP_benchmark webdataset mirror (``wds.py``); class names and templates from the mirror's
  files. When the mirror is a registry dataset's (``routes.json``), its known sample count is checked.
- a registry key (``cifar10``, ``stanford-cars``, ...): torchvision's layout under the data root (``paper.py``);
  when that is missing, the dataset's mirror if a copy is on this machine, or, with ``--download`` where
  torchvision's download does not work (``routes.json`` status other than "works"), the mirror fetched from
  the hub. The registry's class names (mapped onto the mirror's labels by name) and templates are used either
  way; the record states the source, the split and any split difference from the paper.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import CounterclipError, DatasetNotFoundError
from . import routes, wds


def _templates(lines: list[str] | None, where) -> list[str]:
    if not lines:
        return ["a photo of a {}."]
    from ..zeroshot import check_template

    # CLIP_benchmark writes {c}; ZeroShotClassifier formats positionally
    return [check_template(t.replace("{c}", "{}"), str(where)) for t in lines]


def _open_mirror(name: str, split: str, data_root, download: bool, image_size, resize, allow_partial: bool,
                 interpolation: str = "bilinear"):
    from . import pil_transform

    folder, how = wds.locate(name, split, data_root, download)
    available = wds.splits_of(folder)
    if split not in available:
        raise CounterclipError(f"dataset wds/{name}: the mirror copy {folder} has split(s) "
                               f"{', '.join(available) or 'none'}, not {split!r} (a partial copy?)")
    ds = wds.WdsMirror(folder, split, pil_transform(image_size, resize, interpolation), allow_partial=allow_partial)
    if len(ds) == 0:
        raise CounterclipError(f"dataset wds/{name}: no samples in {folder / split} (every shard missing or empty)")
    classnames = wds.read_lines(folder / "classnames.txt")
    if not classnames:
        raise CounterclipError(f"dataset wds/{name}: {folder / 'classnames.txt'} is missing or empty")
    bad = sorted({s.label for s in ds.samples if not 0 <= s.label < len(classnames)})
    if bad:
        raise CounterclipError(f"dataset wds/{name}: labels {bad[:5]} outside the {len(classnames)} classes of "
                               f"{folder / 'classnames.txt'}")
    return folder, how, ds, classnames


def _mirror_info(name: str, folder, how: str, ds) -> dict:
    info = {"dataset": f"wds/{name}", "repo": wds.repo_id(name), "folder": str(folder), "found": how,
            "nshards": ds.nshards}
    if ds.missing_shards:
        info["missing_shards"] = ds.missing_shards
    return info


def mirror_dataset(name: str, split: str, data_root, download: bool, image_size, resize, allow_partial: bool,
                   prompts: str = "clip", interpolation: str = "bilinear"):
    """``--dataset wds/<name>``: the mirror as it is, with its own class names and templates; with
    ``prompts="reference"`` a registry dataset's mirror takes the reference code's (relabelled by name)."""
    from . import LoadedDataset, describe_transform

    if not wds.valid_name(name):  # it becomes a hub repo id and folder names under --output
        raise CounterclipError(f"dataset wds/{name}: not a mirror name (CLIP_benchmark's form: wds/cars, "
                               "wds/vtab/cifar10; letters, digits, '_', '-', '.', '/' between parts, no '..')")
    folder, how, ds, classnames = _open_mirror(name, split, data_root, download, image_size, resize,
                                               allow_partial, interpolation)
    templates = _templates(wds.read_lines(folder / "zeroshot_classification_templates.txt"),
                           folder / "zeroshot_classification_templates.txt")
    key = routes.registry_key_for(name)
    extra = {"data_root": str(folder), "mirror": _mirror_info(name, folder, how, ds)}
    if key is not None:
        m = routes.mirror_of(key)
        extra["registry_key"] = key
        if not m["same_split_as_paper"]:
            extra["split_note"] = m["note"]
        expected = routes.expected_count(key, "wds", split)
    else:
        expected = None
    extra["count_check"] = routes.check_count(f"dataset wds/{name} ({folder / split})", len(ds), expected,
                                              allow_partial, ds.missing_shards)
    if prompts != "clip":
        if key is None:
            raise CounterclipError(f"dataset wds/{name}: --prompts {prompts} needs a registry dataset's mirror "
                                   "(see `counterclip datasets`); this one has only its own class names")
        classnames, templates, extra["classnames_source"] = relabel_to_registry(key, ds, classnames, prompts,
                                                                                wds.repo_id(name))
    else:
        extra["classnames_source"] = f"{folder / 'classnames.txt'} (the mirror's own)"
    return LoadedDataset(f"wds/{name}", ds, classnames, templates, split,
                         preprocess=describe_transform(image_size, resize, interpolation), extra=extra,
                         prompts=prompts, source=f"wds:{wds.repo_id(name)}")


def relabel_to_registry(key: str, ds, mirror_classnames: list[str], prompts: str, where: str):
    """Relabel the mirror's samples into the registry's label order under prompt style ``prompts`` (matched by
    name against the packaged identifiers and names, never by position) and drop the samples of classes the
    style drops (the reference ImageNet's n03710637); returns the style's (class names, templates, source)."""
    from .paper import _norm, load_metadata
    from .prompts import prompt_set

    meta = load_metadata(key)
    canon = list(meta.get("raw_classes") or meta["classnames"])  # the clip set's label order
    lookup: dict[str, list[int]] = {}
    # the mirror's own names where they are neither ours nor the identifiers (VTAB PCAM, VTAB Flowers: routes.json)
    aliases = ((routes.mirror_of(key) or {}).get("class_aliases") or {}).items()
    for i, n in [*enumerate(meta.get("raw_classes") or []), *enumerate(meta["classnames"]),
                 *((int(i), n) for i, n in aliases)]:
        hits = lookup.setdefault(_norm(n), [])
        if i not in hits:
            hits.append(i)
    seen: dict[str, int] = {}
    order = []
    for c in mirror_classnames:  # a name two classes share (ImageNet's two "crane"s) maps in order of appearance
        hits, k = lookup.get(_norm(c), []), seen.get(_norm(c), 0)
        order.append(hits[k] if k < len(hits) else None)
        seen[_norm(c)] = k + 1
    unknown = [c for c, i in zip(mirror_classnames, order) if i is None]
    if unknown or len(set(order)) != len(order) or len(order) != len(canon):
        why = (f"class {unknown[0]!r} is not one of the packaged classes" if unknown else
               f"{len(mirror_classnames)} classes map onto {len(set(order))} of the packaged {len(canon)}")
        raise CounterclipError(f"dataset {key} from the mirror {where}: {why}; evaluate the mirror as it is with "
                               f"--dataset {routes.mirror_of(key)['dataset']} (its own class names)")
    ps = prompt_set(key, prompts)
    style_ids = ps.get("raw_classes")
    if style_ids is not None and meta.get("raw_classes"):
        pos = {_norm(c): k for k, c in enumerate(style_ids)}
        new = [pos.get(_norm(canon[i])) for i in order]  # None: a class the style drops
    else:
        new = list(order)
    ds.samples = [replace(s, label=new[s.label]) for s in ds.samples if new[s.label] is not None]
    return list(ps["classnames"]), list(ps["templates"]), ps["source"]


def _mirror_for_registry(key: str, split: str, data_root, download: bool, image_size, resize,
                         allow_partial: bool, prompts: str, interpolation: str = "bilinear"):
    from . import LoadedDataset, describe_transform
    from .paper import default_data_root

    m = routes.mirror_of(key)
    name = m["dataset"][len("wds/"):]
    folder, how, ds, mirror_names = _open_mirror(name, m["split"], data_root, download, image_size, resize,
                                                 allow_partial, interpolation)
    count = routes.check_count(f"dataset {key} (mirror {folder / m['split']})", len(ds),
                               routes.expected_count(key, "wds", m["split"]), allow_partial, ds.missing_shards)
    classnames, templates, names_source = relabel_to_registry(key, ds, mirror_names, prompts, m["repo"])
    extra = {"data_root": str(default_data_root(data_root)), "requested_split": split,
             "classnames_source": names_source, "prompts": prompts,
             "mirror": _mirror_info(name, folder, how, ds), "count_check": count}
    if not m["same_split_as_paper"]:
        extra["split_note"] = m["note"]
    return LoadedDataset(key, ds, classnames, templates, m["split"],
                         preprocess=describe_transform(image_size, resize, interpolation), extra=extra,
                         prompts=prompts, source=f"wds:{m['repo']}")


def registry_dataset(key: str, build, split: str, data_root, download: bool, image_size, resize,
                     allow_partial: bool, prompts: str = "clip", interpolation: str = "bilinear"):
    """A registry dataset by the best route that works here (see the module docstring)."""
    r = routes.route(key) or {}
    m = r.get("mirror")
    tv_works = (r.get("torchvision") or {}).get("status", "works") == "works"
    try:  # torchvision's download only where it works; otherwise a missing test layout falls to the mirror
        # (the mirror holds the test split only: other splits keep torchvision's download, fragile or not)
        data = build(split, data_root, download and (tv_works or m is None or split != "test"), image_size,
                     resize, prompts=prompts, interpolation=interpolation)
    except DatasetNotFoundError as e:
        if m is None or split != "test":
            raise
        name = m["dataset"][len("wds/"):]
        if not (download or wds.local_copy(name, _root(data_root)) or wds.cached_copy(name, m["split"])):
            raise DatasetNotFoundError(f"{e} Or use its webdataset mirror: pass --download (fetches "
                                       f"{m['repo']} into the Hugging Face cache) or put a copy at "
                                       f"{_root(data_root) / ('wds_' + wds.cleaned(name))}") from None
        return _mirror_for_registry(key, split, data_root, download, image_size, resize, allow_partial, prompts,
                                    interpolation)
    data.source = "torchvision"
    found = data.extra.get("samples_before_drop", len(data))  # the reference ImageNet drops 50 images
    data.extra["count_check"] = routes.check_count(f"dataset {key} ({data.extra.get('data_root')})", found,
                                                   routes.expected_count(key, "torchvision", data.split),
                                                   allow_partial)
    return data


def _root(data_root):
    from .paper import default_data_root

    return default_data_root(data_root)
