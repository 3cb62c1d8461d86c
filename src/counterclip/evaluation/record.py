"""One result record per (dataset, attack, budget, defense, threat model): the JSON (CLIP_benchmark's convention,
metrics as fractions) and its ``.npz`` sidecar of per-sample arrays, sealed together (``integrity.py``).

``RECORD_FIELDS`` documents every top-level key (in the spirit of lm-evaluation-harness's ``result_schema.py``);
``SCHEMA_VERSION`` (``keys.py``) is written into each record, and ``report``/``build`` read any version up to it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import __version__
from . import composite
from .clip_benchmark import add_benchmark_fields
from .describe import cost_summary, gate_summary, gradient_choice
from .integrity import seal_record
from .keys import SCHEMA_VERSION, attack_record_cfg
from .locks import exclusive
from .metrics import accuracy_metrics
from .settings import run_settings
from .state import json_plain, write_json, write_npz
from .zeroshot import versions

RECORD_FIELDS = {
    "schema_version": "the record layout's version (absent: 1, the layout before the field existed)",
    "model": "model name", "pretrained": "pretrained tag or file", "vision_checkpoint": "robust tower file, if any",
    "activation": "gelu or quick_gelu", "dataset": "registry key", "split": "evaluated split",
    "attack": "the oblivious attack (or the budget an adaptive one ran at): name, eps, eps_str, steps, step_size, ...",
    "defense": "{name, params}", "threat_model": "oblivious or adaptive",
    "metrics": "clean_acc, robust_acc (fractions), their 95% intervals, n_samples; acc1 for CLIP_benchmark",
    "adaptive_attack": "adaptive records: the attack's config, how its gradient went through the defense",
    "sanity": "the sanity suite: {check: {passed, detail}}", "cost": "encoder passes per image, images/s",
    "gate": "gated defenses: threshold and the share of clean and adversarial inputs the gate lets through",
    "autoattack": "composed attacks: robust accuracy after each stage", "settings": "every run setting",
    "sidecar": "the .npz with per-sample arrays", "integrity": "config key and checksums (resume, damage checks)",
}


def build_record(ctx, run, label: str, eps: float, threat: str, attack, dname, defense, clean, result,
                 x_init=None, sanity=None, attack_time_s=None) -> dict:
    """The record's JSON fields (before sealing). ``run``: the runner's model-wide facts (``cfg``, ``model``,
    ``model_id``, ``tau_encoder``); ``attack``: the attack as the record names it (``plan.as_recorded``);
    ``clean``/``result``: the clean and attacked ``CellResult``; ``sanity``: rec -> the sanity block."""
    cfg = run.cfg
    params = defense.params()
    if dname == "ttc" and run.tau_encoder is not None:
        params["tau_encoder"] = "the base model's original vision tower (spec section 2)"
    n = len(result.correct)
    nc, nr = int(clean.correct.sum()), int(result.correct.sum())
    rec = {"schema_version": SCHEMA_VERSION,
           "model": cfg.model, "pretrained": cfg.pretrained, "vision_checkpoint": cfg.vision_checkpoint,
           "activation": run.model.activation, "dataset": ctx.data.name, "split": ctx.data.split,
           "attack": attack_record_cfg(label, eps, attack), "defense": {"name": dname, "params": params},
           "threat_model": threat,
           "metrics": {**accuracy_metrics("clean", nc, n), **accuracy_metrics("robust", nr, n), "n_samples": n},
           "seed": cfg.seed, "limit": cfg.limit, "prompts": ctx.data.prompts, "templates": ctx.data.templates,
           "preprocess": ctx.data.preprocess, "adv_storage": "fp16 perturbation, re-projected on load",
           "quantize": cfg.quantize, "precision": cfg.precision}
    rec.update(ctx.data.record_fields())  # source, dataset_size, split_note, count_check (issue 9)
    add_benchmark_fields(rec)  # CLIP_benchmark's pretrained (a string), task, language, metrics.acc1
    if threat == "adaptive":
        rec["adaptive_attack"] = attack.config()
        rec["adaptive_attack"]["gradient"] = gradient_choice(defense, attack)
        if x_init is not None:  # the oblivious attack whose point it extends (its knobs label it in the report)
            rec["adaptive_attack"]["x_init"] = {k: v for k, v in x_init.config().items()
                                                if k not in ("eps", "eps_str")}
    if result.draws is not None:
        rec["metrics"].update(composite.draws_metrics(result.draws))
    if result.broken_by is not None:
        rec["autoattack"] = composite.stage_record(attack, result.broken_by, ctx.clf.num_classes)
    if sanity is not None:
        rec["sanity"] = sanity(rec)
    # seconds this run spent on the record's own cells (0 for cells resumed from saved chunks); the attack
    # generation time, shared by every defense of an oblivious attack, is given apart
    rec["time_s"] = round(result.elapsed, 2) if result.elapsed is not None else None
    if attack_time_s is not None:
        rec["attack_time_s"] = round(attack_time_s, 2)
    # the defense's cost on this record's inputs: encoder passes per image (counted) and images/s (measured)
    rec["cost"] = cost_summary(result.cost)
    g = gate_summary(defense, clean.gate, result.gate)
    if g is not None:
        rec["gate"] = g
    rec["versions"] = versions()
    rec["settings"] = run_settings(cfg, run.model_id, __version__)  # the report never pools unlike ones
    if "skipped_images" in ctx.data.extra:  # hostile or broken files left out of an image folder
        rec["skipped_images"] = ctx.data.extra["skipped_images"]
    return rec


def sidecar_arrays(ctx, clean, result, tau_adv, attack=None) -> dict:
    arrays = {"index": ctx.clean["idx"].numpy().astype(np.int64), "label": ctx.clean["y"].numpy().astype(np.int64),
              "clean_correct": clean.correct.numpy().astype(bool),
              "robust_correct": result.correct.numpy().astype(bool),
              "clean_tau": ctx.clean["tau"].numpy().astype(np.float32), "adv_tau": tau_adv.numpy().astype(np.float32)}
    if result.draws is not None:
        arrays["robust_correct_draws"] = result.draws.numpy().astype(bool)
    if result.broken_by is not None:
        arrays["broken_by"] = composite.broken_by_labels(attack, result.broken_by, ctx.clf.num_classes)
    return arrays


def write_pair(path: Path, rec: dict, config_key: str, arrays: dict) -> None:
    """The sidecar first (a record names a whole one), then the sealed record; a concurrent writer's pair never
    interleaves with ours."""
    rec["sidecar"] = path.with_suffix(".npz").name
    with exclusive(path.parent):
        side_sha = write_npz(path.with_suffix(".npz"), arrays)
        rec.update(seal_record(json_plain(rec), config_key, side_sha))
        write_json(path, rec)


def summary_line(r: dict) -> str:
    a = r["adaptive_attack"]["name"] if r.get("adaptive_attack") else r["attack"]["name"]
    flags = [k for k, v in r["sanity"].items() if v["passed"] is False]
    notes = [k for k, v in r["sanity"].items() if v.get("fired")]
    m = r["metrics"]
    draws = (f"  all {m['eval_draws']} draws {m['robust_acc_all_draws']:.4f}" if m.get("eval_draws", 1) > 1 else "")
    status = ("FLAGGED: " + ", ".join(flags) if flags else "ok") + ("; " + ", ".join(notes) if notes else "")
    return (f"{r['dataset']:<14} {a:<16} {r['attack']['eps_str']:<7} {r['defense']['name']:<15} "
            f"{r['threat_model']:<10} {m['clean_acc']:>7.4f} {m['robust_acc']:>7.4f}  {status}{draws}")


SUMMARY_HEADER = (f"\n{'dataset':<14} {'attack':<16} {'eps':<7} {'defense':<15} {'threat':<10} "
                  f"{'clean':>7} {'robust':>7}  sanity")
