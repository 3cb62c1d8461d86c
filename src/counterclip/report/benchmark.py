"""``counterclip build DIR... --output results.csv``: records -> one CSV, one row per record, as
CLIP_benchmark's ``build`` does (``metrics`` unpacked into columns, ``model_fullname``), plus attack, defense
and threat-model columns; directories are searched recursively. The CLIP_benchmark fields of a record are
described in ``counterclip.evaluation.clip_benchmark``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ..errors import CounterclipError

# first columns of `counterclip build`; every other field follows, sorted
LEADING = ("dataset", "model", "pretrained", "model_fullname", "task", "language", "acc1", "clean_acc",
           "robust_acc", "n_samples", "attack", "eps", "eps_str", "defense", "defense_params", "threat_model",
           "adaptive_attack", "gradient")
SKIPPED = ("templates", "classnames", "integrity", "versions", "sanity")


def _cell(value):
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def flat_row(data: dict, rel_path: str) -> dict:
    """One CSV row: metrics unpacked, attack/defense/threat-model columns, other fields flattened
    (``cost.images_per_s``, ...)."""
    row = {k: _cell(v) for k, v in (data.get("metrics") or {}).items()}
    for k, v in data.items():
        if k == "metrics" or k in SKIPPED:
            continue
        if k in ("attack", "defense", "adaptive_attack") and isinstance(v, dict):
            row[k] = v.get("name")
            for kk, vv in v.items():
                if kk == "params":
                    row[f"{k}_params"] = _cell(vv)
                elif k == "attack" and kk in ("eps", "eps_str"):
                    row[kk] = _cell(vv)
                elif kk != "name":
                    row[f"{k}.{kk}"] = _cell(vv)
        elif isinstance(v, dict):
            for kk, vv in v.items():
                row[f"{k}.{kk}"] = _cell(vv)
        else:
            row[k] = _cell(v)
    sanity = data.get("sanity")
    if isinstance(sanity, dict):
        failed = sorted(k for k, c in sanity.items() if isinstance(c, dict) and c.get("passed") is False)
        row["sanity"] = "ok" if not failed else "failed: " + ",".join(failed)
    row["model_fullname"] = f"{row.get('model', '')} {row.get('pretrained', '')}"
    row["path"] = rel_path
    return row


def collect(paths) -> list[dict]:
    """Rows from record files and run directories (recursively, ``.state`` ignored, damaged records skipped
    with a warning as in ``counterclip report``)."""
    from .records import newer_schema, load_records

    rows, seen = [], set()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            records = load_records(p, command="build")
            for r in records:
                if (p / r.path).resolve() not in seen:  # a folder and its subfolder: each record once
                    seen.add((p / r.path).resolve())
                    rows.append(flat_row(r.raw, (p / r.path).as_posix()))
        elif p.is_file():
            if p.resolve() in seen:
                continue
            seen.add(p.resolve())
            try:
                data = json.loads(p.read_text())
            except (OSError, ValueError) as e:
                raise CounterclipError(f"build: cannot read {p}: {e}") from None
            if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
                raise CounterclipError(f"build: {p} is not a result record (no metrics)")
            newer = newer_schema(data)
            if newer:
                raise CounterclipError(f"build: {p}: {newer}")
            rows.append(flat_row(data, p.as_posix()))
        else:
            raise CounterclipError(f"build: no such file or directory: {p}")
    return rows


def write_csv(rows: list[dict], output) -> Path:
    fields = [k for k in LEADING if any(k in r for r in rows)]
    fields += sorted({k for r in rows for k in r} - set(fields) - {"path"}) + ["path"]
    out = Path(output)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out)
    return out


def build(paths, output) -> tuple[Path, int]:
    rows = collect(paths)
    if not rows:
        raise CounterclipError(f"build: no result records under {', '.join(map(str, paths))}")
    return write_csv(rows, output), len(rows)
