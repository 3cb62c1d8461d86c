"""The spec's presets (``finetune.md`` sections 2-4, 7, 8) as data: per preset, shared settings plus one entry per
method. A value given on the command line (or to ``finetune(...)``) replaces the preset's."""

from __future__ import annotations

from ..errors import CounterclipError, UnknownNameError

# warmup: an int is a number of steps, a float below 1 a fraction of the total steps (the toy keeps the fraction
# because the references' 1000 steps would be a quarter or more of a toy run).
# Data transform (section 1): TeCoA/PMG-AFT/TTC lineage Resize(256) bilinear -> CenterCrop(224); FARE (and the
# RobustVLM code, which trains the robustvlm preset's TeCoA too) Resize(224) bicubic -> CenterCrop(224); the toy
# is at its native 28 px, no resize. Prompts (section 1): TTC lineage "This is a photo of a {}." with the reference
# TinyImageNet clean names; RobustVLM "This is a photo of a {}" (no period) with class names lower-cased and
# '_', '-', '/' turned into spaces (refine_names). robustvlm's length is max_steps; its epochs only satisfies the
# setting's check (max_steps wins).
PRESETS: dict[str, dict] = {
    "toy": {
        "common": {"model": "tiny-fmnist", "pretrained": None, "dataset": "fashion-mnist", "classes": "0-4",
                   "prompts": "clip", "template": "a photo of a {}.", "eps": "4/255", "batch_size": 256,
                   "epochs": 1, "eval_eps": "4/255"},
        # lr by the section 7 rule, 1 epoch per grid value (docs/finetune.md has the measured table); for each
        # method every value kept held-out clean accuracy within 2 points of the undefended model's and the top
        # of the grid gave the best held-out robust accuracy. 1 epoch (the spec's draft said 3) is the
        # calibration's length and what the shipped towers were trained with, so this preset retrains them.
        "tecoa": {"steps": 2, "step_size": "4/255", "momentum": 0.0, "optimizer": "sgd", "lr": 1e-3,
                  "weight_decay": 0.0, "warmup": 0.05},
        "pmg-aft": {"steps": 2, "step_size": "4/255", "momentum": 0.0, "optimizer": "sgd", "lr": 1e-3,
                    "weight_decay": 0.0, "warmup": 0.05},
        "fare": {"steps": 10, "step_size": "1/255", "momentum": 0.9, "optimizer": "adamw", "lr": 1e-4,
                 "weight_decay": 1e-4, "warmup": 0.07},
    },
    "ttc": {
        "common": {"model": "ViT-B-32", "pretrained": "openai", "dataset": "tinyimagenet", "classes": None,
                   "prompts": "reference", "template": "This is a photo of a {}.", "eps": "1/255",
                   "epochs": 10, "image_size": 224, "resize": 256, "interpolation": "bilinear",
                   "eval_eps": "1/255"},
        "tecoa": {"steps": 2, "step_size": "1/255", "momentum": 0.0, "optimizer": "sgd", "lr": 1e-5,
                  "weight_decay": 0.0, "warmup": 1000, "batch_size": 256},
        "pmg-aft": {"steps": 2, "step_size": "1/255", "momentum": 0.0, "optimizer": "sgd", "lr": 5e-5,
                    "weight_decay": 0.0, "warmup": 1000, "batch_size": 256},
        "fare": {"steps": 10, "step_size": "1/1020", "momentum": 0.9, "optimizer": "adamw", "lr": 1e-5,
                 "weight_decay": 1e-4, "warmup": 0.07, "batch_size": 128, "resize": 224,
                 "interpolation": "bicubic"},
    },
    "robustvlm": {
        "common": {"model": "ViT-B-32", "pretrained": "openai", "dataset": "imagenet", "classes": None,
                   "prompts": "clip", "template": "This is a photo of a {}", "refine_names": True,
                   "eps": "4/255", "steps": 10,
                   "step_size": "1/255", "momentum": 0.9, "optimizer": "adamw", "lr": 1e-5,
                   "weight_decay": 1e-4, "batch_size": 128, "max_steps": 20000, "epochs": 1, "warmup": 1400,
                   "image_size": 224, "resize": 224, "interpolation": "bicubic", "eval_eps": "4/255"},
        "tecoa": {},
        "fare": {},
    },
}


def preset_settings(preset: str, method: str) -> dict:
    """The settings of ``method`` (a canonical method name) under ``preset``."""
    if preset not in PRESETS:
        raise UnknownNameError("preset", preset, PRESETS)
    table = PRESETS[preset]
    if method not in table:
        methods = sorted(k for k in table if k != "common")
        raise CounterclipError(f"preset {preset!r} has no recipe for {method}; it covers {', '.join(methods)}")
    return {**table["common"], **table[method]}
