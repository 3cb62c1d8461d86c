"""CLIP_benchmark-shaped records: the fields its ``build`` step reads, added beside ours.

CLIP_benchmark writes one JSON per (dataset, model, pretrained, language, task) with ``metrics.acc1`` and
builds a CSV with one row per file (``metrics`` unpacked into columns, ``model_fullname = model + " " +
pretrained``). Our records carry those fields: ``pretrained`` as a string (the tag, a weights file's name, or
the model's own name when it has embedded / hub weights; ``pretrained_arg`` keeps what was passed),
``task``, ``language`` and ``metrics.acc1`` (the record's accuracy: clean when there is no attack, robust
under attack, as the RobustVLM fork of CLIP_benchmark writes it).
"""

from __future__ import annotations

import os

TASK = "zeroshot_classification"
LANGUAGE = "en"  # every prompt set we ship is English


def pretrained_label(model: str, pretrained) -> str:
    """The string CLIP_benchmark expects in ``pretrained``."""
    if pretrained is None:
        name = str(model)
        if name.startswith("hf:"):
            ident = name[3:].rstrip("/\\")
            return os.path.basename(ident) if os.path.isdir(os.path.expanduser(ident)) else ident
        return name
    text = str(pretrained)
    return os.path.basename(text) if os.path.isfile(text) else text


def add_benchmark_fields(record: dict) -> dict:
    """Add CLIP_benchmark's fields to a record in place (and return it)."""
    record["pretrained_arg"] = record.get("pretrained")
    record["pretrained"] = pretrained_label(record.get("model", ""), record.get("pretrained"))
    record.setdefault("task", TASK)
    record.setdefault("language", LANGUAGE)
    m = record.get("metrics")
    if isinstance(m, dict):
        attack = record.get("attack")
        name = attack.get("name") if isinstance(attack, dict) else attack
        attacked = name not in (None, "none") and "robust_acc" in m
        if attacked or "clean_acc" in m:
            m["acc1"] = m["robust_acc"] if attacked else m["clean_acc"]
    return record
