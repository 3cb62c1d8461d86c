"""Routes to every registry dataset (torchvision download, CLIP_benchmark webdataset mirror, manual layout) and
the known sample counts that guard against half-downloaded or wrong folders.

The table is package data (``routes.json``); ``docs/datasets.md`` renders it for people and ``counterclip
datasets`` shows it per dataset with what is on disk (``routes_view``).
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import CounterclipError

ENFORCED = ("publication", "derived")  # a count off by these fails unless --allow-partial; "unverified" warns


@lru_cache(maxsize=None)
def table() -> dict:
    return json.loads(resources.files("counterclip.data").joinpath("routes.json").read_text(encoding="utf-8"))


def route(key: str) -> dict | None:
    return table()["datasets"].get(key)


def mirror_of(key: str) -> dict | None:
    r = route(key)
    return r["mirror"] if r else None


def registry_key_for(mirror_name: str) -> str | None:
    """The registry dataset whose mirror is ``wds/<mirror_name>`` (``cars`` -> ``stanford-cars``)."""
    for key, r in table()["datasets"].items():
        if r["mirror"] and r["mirror"]["dataset"] == f"wds/{mirror_name}":
            return key
    return None


def expected_count(key: str, source: str, split: str) -> tuple[int | None, str] | None:
    """(count, basis) for ``key``'s ``split`` read through ``source`` ("torchvision" or "wds"), None if unknown."""
    r = route(key)
    if r is None:
        return None
    if source == "wds":
        m = r["mirror"]
        return (m["n"], m["basis"]) if m and m["split"] == split else None
    c = r["counts"].get(split)
    return (c["n"], c["basis"]) if c else None


def check_count(what: str, found: int, expected, allow_partial: bool, missing_parts: list | None = None) -> dict:
    """The ``count_check`` block of a record; raises one line when an enforced count is off (or parts of the
    copy are missing) without ``allow_partial``."""
    block = {"found": found, "expected": None, "basis": None, "status": "unknown", "allow_partial": allow_partial}
    if missing_parts:
        block["missing"] = list(missing_parts)
    if expected is not None:
        block["expected"], block["basis"] = expected
    n_exp, basis = (expected if expected is not None else (None, None))
    off = n_exp is not None and found != n_exp
    if not off and not missing_parts:
        block["status"] = "ok" if n_exp is not None else "unknown"
        return block
    detail = (f"{found} samples where {n_exp} are expected ({basis} count)" if off else
              f"{len(missing_parts)} part(s) missing ({missing_parts[0]} first)")
    if allow_partial:
        block["status"] = "partial (allowed)"
        warnings.warn(f"{what}: {detail}; evaluating it anyway (--allow-partial)", stacklevel=3)
        return block
    if basis in ENFORCED or missing_parts:
        raise CounterclipError(f"{what}: {detail}: an incomplete or different copy. Re-fetch it, or pass "
                               "--allow-partial to evaluate what is there (the record then says so)")
    block["status"] = "count differs from an unverified expectation"
    warnings.warn(f"{what}: {detail}; that expectation could not be verified, so this only warns", stacklevel=3)
    return block


def local_status(key: str, data_root=None) -> dict:
    """What is on disk for ``key``: the torchvision layout, a local mirror copy, the mirror in the HF cache."""
    from . import paper, wds

    root = paper.default_data_root(data_root)
    out = {"root": str(root), "torchvision_layout": None, "mirror_copy": None, "mirror_cached": None}
    spec = paper.SPECS.get(key)
    if spec is not None:
        native = spec.splits.get("test")
        out["torchvision_layout"] = all(Path(p).exists() for p in spec.needs(root, native))
    m = mirror_of(key)
    if m is not None:
        name = m["dataset"][len("wds/"):]
        copy = wds.local_copy(name, root)
        out["mirror_copy"] = str(copy) if copy is not None else None
        cached = wds.cached_copy(name, m["split"])
        out["mirror_cached"] = str(cached) if cached is not None else None
    return out


def routes_view(keys=None, data_root=None) -> str:
    """One block per dataset: torchvision route, mirror route, counts and the local status (the
    ``counterclip datasets`` routes view)."""
    from . import paper, wds

    lines = []
    for key in keys or list(table()["datasets"]):
        r = route(key)
        if r is None:
            lines.append(f"{key}: no route data (not a registry dataset)")
            continue
        tv, m = r["torchvision"], r["mirror"]
        st = local_status(key, data_root)
        counts = ", ".join(f"{s} {c['n']} ({c['basis']})" for s, c in r["counts"].items())
        lines.append(f"{key}")
        lines.append(f"  torchvision --download: {tv['status']} ({tv['note']}); counts: {counts}")
        if m:
            n = f"{m['n']} samples" if m["n"] is not None else "size unknown"
            same = "same split as the paper" if m["same_split_as_paper"] else "DIFFERENT split from the paper"
            lines.append(f"  mirror: --dataset {m['dataset']} (hub {m['repo']}), split {m['split']}, {n} "
                         f"({m['basis']}), {same}: {m['note']}")
        else:
            lines.append("  mirror: none in CLIP_benchmark's list")
        spec = paper.SPECS.get(key)
        if spec is not None:
            needs = spec.needs(Path(st["root"]), spec.splits["test"])
            lines.append("  by hand (torchvision's layout): " + (", ".join(str(p) for p in needs) or "see docs")
                         + (f" or a mirror copy at {Path(st['root']) / ('wds_' + wds.cleaned(m['dataset'][4:]))}"
                            if m else ""))
        have = [f"torchvision layout under {st['root']}"] if st["torchvision_layout"] else []
        if st["mirror_copy"]:
            have.append(f"mirror copy {st['mirror_copy']}")
        if st["mirror_cached"]:
            have.append(f"mirror in the HF cache {st['mirror_cached']}")
        lines.append(f"  on this machine: {'; '.join(have) if have else 'nothing found'}")
    return "\n".join(lines)
