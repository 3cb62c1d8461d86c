"""The end of a run: pick the weights (last, or the best held-out robust accuracy with ``--select heldout``),
write the checkpoint files and ``finetune.json`` (configuration, per-epoch held-out accuracy, images/s, the
sha256 of every file written)."""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .data import content_hash


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_metadata(trainer, state: dict, epoch: int) -> dict:
    """The checkpoint's ``counterclip`` block: primitives only (spec section 5)."""
    from .. import __version__

    cfg, m = trainer.cfg, trainer.method
    return {
        "method": m.name, **{k: v for k, v in m.config().items() if k != "method"}, "preset": cfg["preset"],
        "eps": cfg["eps"], "steps": cfg["steps"], "step_size": cfg["step_size"], "momentum": cfg["momentum"],
        "lr": cfg["lr"], "optimizer": cfg["optimizer"], "weight_decay": cfg["weight_decay"],
        "batch_size": cfg["batch_size"], "world_size": trainer.dist.world, "optimizer_steps": state["step"],
        "warmup_steps": trainer.warmup, "epochs": epoch, "seed": cfg["seed"], "dataset": cfg["dataset"],
        "split": "train", "classes": trainer.classes, "train_images": len(trainer.train_idx),
        "train_files_hash": content_hash(trainer.train_idx), "heldout_images": len(trainer.held_idx),
        "heldout_files_hash": content_hash(trainer.held_idx), "heldout_rule": trainer.heldout_rule,
        "preprocess": trainer.loaded.preprocess, "classnames": trainer.classnames,
        "template": trainer.template, "normalisation": m.normalisation, "model": cfg["model"],
        "pretrained": cfg["pretrained"], "start_checkpoint": cfg["vision_checkpoint"],
        "select": cfg["select"], "torch": torch.__version__, "counterclip": __version__,
        "git_revision": git_revision(), "train_seconds": round(state["train_seconds"], 2),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def finish_run(trainer, state: dict) -> dict:
    cfg, out = trainer.cfg, trainer.out
    epoch = math.ceil(state["step"] / trainer.steps_per_epoch)
    best, history = state.get("best"), state["history"]
    if cfg["select"] == "heldout" and best is not None:
        weights, best_acc, chosen = best["tower"], best["acc"], {"epoch": best["epoch"], "step": best["step"]}
    else:
        weights = trainer.tower.state_dict()
        best_acc = history[-1].get("heldout_robust_acc", 0.0) if history else 0.0
        chosen = {"epoch": epoch, "step": state["step"]}
    meta = run_metadata(trainer, state, epoch) | {"selected": chosen}
    optimizer = None if cfg["weights_only"] else trainer.opt.state_dict()
    files = ckpt.write_outputs(out, trainer.method.checkpoint_name, weights, optimizer, epoch=epoch,
                               best_acc1=float(best_acc), meta=meta, fmt=cfg["format"],
                               compat_keys=cfg["tecoa_compat_keys"])
    images_per_s = state["images"] / max(state["train_seconds"], 1e-9)
    record = {"config": ckpt.primitives(cfg), "run": ckpt.primitives(meta), "history": history,
              "images_per_s": images_per_s, "train_seconds": state["train_seconds"],
              "best_acc1": float(best_acc),
              "files": {p.name: {"sha256": ckpt.sha256(p), "bytes": p.stat().st_size} for p in files}}
    ckpt.save_json(ckpt.primitives(record), out / "finetune.json")
    trainer.log(f"wrote {', '.join(str(p) for p in files)} ({state['step']} steps, {images_per_s:.1f} img/s)")
    return record
