"""``counterclip datasets``: every registry key, whether it is on disk under the data root, how to get it.

Checks only that the files a loader needs exist (the same check ``get_dataset`` runs before torchvision is
called); nothing is opened, created or downloaded.
"""

from __future__ import annotations

from pathlib import Path

from . import fashion_mnist, paper
from .prompts import PROMPT_STYLES, has_style


def _fashion_mnist_status(root: Path) -> tuple[str, str]:
    for d in fashion_mnist._candidate_dirs(root):
        if all(fashion_mnist._find(d, stem) for stem in fashion_mnist._FILES["test"]):
            return "yes", str(d)
    return "no", str(root)


def mirror_status(key: str, root) -> dict | None:
    """The dataset's CLIP_benchmark mirror (``routes.json``) and whether a copy is here: ``{"dataset", "repo",
    "status": "copy" | "cached" | "absent", "where", "fetched_by_download", "torchvision_download"}`` (the
    mirror is what ``--download`` fetches where torchvision's download status is not "works"); None when it has
    no mirror."""
    from . import routes

    m = routes.mirror_of(key)
    if m is None:
        return None
    st = routes.local_status(key, root)
    status, where = (("copy", st["mirror_copy"]) if st["mirror_copy"] else
                     ("cached", st["mirror_cached"]) if st["mirror_cached"] else ("absent", None))
    tv = routes.route(key)["torchvision"]["status"]  # sources.registry_dataset's rule for --download
    return {"dataset": m["dataset"], "repo": m["repo"], "status": status, "where": where,
            "fetched_by_download": tv != "works", "torchvision_download": tv}


def dataset_status(data_root=None) -> list[dict]:
    """One dict per registry key: ``key``, ``name``, ``on_disk`` ("yes" / "no" / "n/a"), ``where`` (the path
    checked or found), ``how`` (how to get it), ``prompts`` (the prompt styles it has)."""
    from . import list_datasets

    root = paper.default_data_root(data_root)
    rows = []
    for key in list_datasets():
        styles = [s for s in PROMPT_STYLES if has_style(key, s)]
        if key in paper.SPECS:
            spec = paper.SPECS[key]
            native = spec.splits["test"]
            missing = [p for p in spec.needs(root, native) if not Path(p).exists()]
            mirror = mirror_status(key, root)
            rows.append({"key": key, "name": spec.meta["display_name"], "on_disk": "no" if missing else "yes",
                         "mirror": mirror,
                         "where": str(missing[0]) if missing else str(root), "how": spec.howto.replace(
                             "{root}", str(root)), "downloadable": spec.downloadable, "prompts": styles,
                         "paper": key in paper.PAPER_DATASETS})
        elif key == "fashion-mnist":
            on_disk, where = _fashion_mnist_status(root)
            rows.append({"key": key, "name": "Fashion-MNIST", "on_disk": on_disk, "where": where,
                         "how": "apt-get install dataset-fashion-mnist (Debian/Ubuntu), or pass --download",
                         "downloadable": True, "prompts": styles, "paper": False})
        else:  # imagefolder: any folder the user names
            rows.append({"key": key, "name": "a folder of class sub-folders", "on_disk": "n/a", "where": "",
                         "how": "point --data-root at a folder with one sub-folder per class", "downloadable": False,
                         "prompts": ["folder names"], "paper": False})
    return rows


def format_status(rows: list[dict], data_root=None) -> str:
    root = paper.default_data_root(data_root)
    width = max(len(r["key"]) for r in rows)
    lines = [f"data root: {root} (--data-root or ${paper.DATA_ENV})", ""]
    lines.append(f"{'dataset':<{width}}  {'on disk':<7}  {'prompts':<14}  how to get it")
    for r in rows:
        note = "" if r["on_disk"] != "no" else f" [missing {r['where']}]"
        if r.get("mirror"):
            m = r["mirror"]
            note += f"; mirror --dataset {m['dataset']}"
            if m.get("fetched_by_download") and "--download fetches" not in r["how"]:
                note += f", which --download fetches (torchvision's download is {m['torchvision_download']})"
            note += f" [{m['status']}: {m['where']}]" if m["where"] else ""
        tag = " (outside the paper's 16-dataset average)" if r["key"] == "tinyimagenet" else ""
        lines.append(f"{r['key']:<{width}}  {r['on_disk']:<7}  {','.join(r['prompts']):<14}  "
                     f"{r['name']}{tag}: {r['how']}{note}")
    lines.append("")
    lines.append("`counterclip datasets show KEY [--prompts clip|reference] [--json]` prints a dataset's class names "
                 "and templates (no data needed).")
    lines.append("`counterclip datasets --routes [KEY ...]` gives every route (torchvision, webdataset mirror, "
                 "manual) with sample counts; docs/datasets.md has the same table.")
    return "\n".join(lines)
