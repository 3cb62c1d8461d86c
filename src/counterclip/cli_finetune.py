"""``counterclip finetune``: adversarial fine-tuning of the vision tower (TeCoA, PMG-AFT, FARE), thin argument
parsing over ``counterclip.finetune``. Options left unset keep the preset's value."""

from __future__ import annotations

import argparse


def _warmup(text: str):
    """``1000`` (steps) or ``0.05`` (a fraction of the total steps)."""
    value = float(text)
    return value if "." in text or "e" in text.lower() else int(value)


def register(sub, add_model_args) -> None:
    from .data import INTERPOLATIONS
    from .finetune.checkpoint import FORMATS
    from .finetune.config import OPTIMIZERS, SELECT
    from .finetune.methods import KL_DIRECTIONS, METHODS, PMG_VARIANTS
    from .finetune.presets import PRESETS

    p = sub.add_parser("finetune", help="adversarially fine-tune the vision tower: TeCoA, PMG-AFT or FARE "
                                        "(resumable, torchrun-ready)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g_m = p.add_argument_group("method")
    g_m.add_argument("--method", required=True,
                     help=" | ".join(words for words, _ in METHODS.table()) + " (aliases after the first word)")
    g_m.add_argument("--preset", default="toy", help=f"recipe: {', '.join(PRESETS)} (finetune.md sections 7-8)")
    g_m.add_argument("--reference", action="store_true",
                     help="the reference code's result-changing quirks (TeCoA: fp16 attack leaking parameter "
                          "gradients; PMG-AFT: the official variant; FARE: unclipped start, late scheduler)")
    g_m.add_argument("--variant", default=None, help=f"PMG-AFT: {', '.join(PMG_VARIANTS)} (default ttc)")
    g_m.add_argument("--kl-direction", default=None,
                     help=f"PMG-AFT: {', '.join(KL_DIRECTIONS)} (default: the variant's)")
    g_m.add_argument("--clean-weight", type=float, default=None, help="FARE: weight of the clean loss (default 0)")
    g_m.add_argument("--trades", action="store_true", default=None,
                     help="FARE: target the detached current clean embedding instead of the original tower's")
    g_model = p.add_argument_group("model", "the CLIP whose vision tower is trained (default: the preset's)")
    add_model_args(g_model)
    g_d = p.add_argument_group("data")
    g_d.add_argument("--dataset", default=None, help="training dataset (any registry key; default: the preset's)")
    g_d.add_argument("--data-root", default=None)
    g_d.add_argument("--download", action="store_true", default=None)
    g_d.add_argument("--prompts", choices=["clip", "reference"], default=None)
    g_d.add_argument("--template", default=None, help="the one prompt template, e.g. 'a photo of a {}.'")
    g_d.add_argument("--refine-names", action=argparse.BooleanOptionalAction, default=None,
                     help="lower-case class names and turn '_', '-', '/' into spaces (the TeCoA/PMG-AFT/RobustVLM "
                          "codes' form; default: the preset's)")
    g_d.add_argument("--image-size", type=int, default=None, help="crop size (default: the preset's, else the "
                                                                  "model's input size)")
    g_d.add_argument("--resize", type=int, default=None, help="resize the short side to this before the crop")
    g_d.add_argument("--interpolation", choices=INTERPOLATIONS, default=None,
                     help="resize filter (default: the preset's; ttc TeCoA/PMG-AFT bilinear, FARE bicubic)")
    g_d.add_argument("--classes", default=None, help="train on these class indices only, e.g. 0-4 or 0,2,7")
    g_d.add_argument("--limit", type=int, default=None, help="train on N images (picked with --seed)")
    g_t = p.add_argument_group("training")
    a = g_t.add_argument
    a("--epochs", type=int, default=None)
    a("--max-steps", type=int, default=None, help="optimiser steps (instead of --epochs)")
    a("--batch-size", type=int, default=None, help="the GLOBAL batch (divided over torchrun ranks)")
    a("--lr", type=float, default=None)
    a("--optimizer", choices=OPTIMIZERS, default=None)
    a("--weight-decay", type=float, default=None)
    a("--warmup", type=_warmup, default=None, help="warmup steps (1000) or a fraction of all steps (0.05)")
    a("--last-n-params", type=int, default=None, help="train only the last N parameter tensors")
    a("--eps", default=None, help="training attack budget, e.g. 4/255")
    a("--steps", type=int, default=None, help="training attack steps K")
    a("--step-size", default=None, help="training attack step alpha, e.g. 1/255")
    a("--momentum", type=float, default=None, help="training attack sign momentum mu")
    a("--seed", type=int, default=None)
    a("--threads", type=int, default=None,
      help="torch CPU threads per process (on a shared machine 1 thread spends far less CPU than 2)")
    g_o = p.add_argument_group("output, evaluation and resume")
    o = g_o.add_argument
    o("--output", required=True, help="folder for the checkpoint, finetune.json and resume state (.state/)")
    o("--format", choices=FORMATS, default=None,
      help="tecoa: <Method>.pth.tar (TTC, RobustVLM); fare: <Method>.pt + _opt.pt; both")
    o("--save-every", type=int, default=None, help="write the resume state every N steps (default 50)")
    o("--select", choices=SELECT, default=None,
      help="last weights, or the best held-out robust accuracy (kept out of training: TinyImageNet TTC's "
           "eval_files, else a seeded 10%% of each class)")
    o("--eval-limit", type=int, default=None, help="held-out images evaluated per epoch; 0 turns it off")
    o("--eval-eps", default=None, help="held-out PGD-10 budget (default: the preset's)")
    o("--weights-only", action="store_true", default=None, help="leave the optimiser state out of the checkpoint")
    o("--tecoa-compat-keys", action="store_true", default=None,
      help="also write the reference files' empty state_dict and add_prompter entries")
    o("--overwrite", action="store_true", default=None, help="start over instead of resuming")
    p.set_defaults(func=_cmd_finetune)


def _cmd_finetune(args) -> int:
    from .finetune import finetune

    keys = ("reference", "variant", "kl_direction", "clean_weight", "trades", "pretrained", "vision_checkpoint",
            "device", "dataset", "data_root", "download", "prompts", "template", "classes", "limit", "epochs",
            "max_steps", "batch_size", "lr", "optimizer", "weight_decay", "warmup", "last_n_params", "eps",
            "steps", "step_size", "momentum", "seed", "format", "save_every", "select", "eval_limit", "eval_eps",
            "weights_only", "tecoa_compat_keys", "overwrite", "threads", "refine_names", "image_size", "resize",
            "interpolation")
    settings = {k: getattr(args, k) for k in keys}
    settings["reference"] = args.reference or None
    if args.model is not None:
        settings["model"] = args.model
    finetune(args.output, method=args.method, preset=args.preset, **settings)
    return 0
