"""The eval, report and demo commands (kept out of cli.py, which stays a thin parser)."""

from __future__ import annotations

import argparse

EVAL_EXAMPLES = """examples:
  counterclip eval --dataset fashion-mnist --attack pgd --eps 1/255,4/255 --defense none,ttc --limit 256 \\
      --output runs/ttc
  counterclip eval --dataset fashion-mnist --attack pgd --eps 4/255 --defense ttc --threat-model both \\
      --adaptive-attack eot-pgd --limit 64 --output runs/adaptive
  counterclip eval --preset paper --data-root DATA --download --output runs/paper
  counterclip eval --dataset cifar10 --attack pgd --eps 4/255 --defense my_defense:MyDefense \\
      --defense-arg my_defense:MyDefense.kernel=5 --output runs/mine   # docs/extending.md
then: counterclip report runs/ttc (tables in runs/ttc/results.md, figures in runs/ttc/figures/)

Budgets are in [0,1] pixel units: write 4/255, not 4. Re-running a command resumes it."""


class _RealDefaults(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows a flag's default only when argparse holds the real one: flags left at None take theirs from
    EvalConfig or the --preset, and say so in their own help; an on/off switch needs no "(default: False)"."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _config_default(name: str) -> str:
    """EvalConfig's default for ``name``, as the help shows it (lists comma-joined)."""
    from dataclasses import MISSING, fields

    from .evaluation.config import EvalConfig

    f = {f.name: f for f in fields(EvalConfig)}[name]
    value = f.default_factory() if f.default is MISSING else f.default
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def register(sub, add_model_args, add_data_args) -> None:
    from .attacks import ADAPTIVE, ATTACKS
    from .defenses import DEFENSES
    from .evaluation.config import PRESETS, THREAT_MODELS

    real = lambda name, more="": f" (default: {_config_default(name)}{more}; a --preset sets its own)"  # noqa: E731
    p = sub.add_parser("eval", help="evaluate datasets x attacks x budgets x defenses (resumable, torchrun-ready)",
                       formatter_class=_RealDefaults, epilog=EVAL_EXAMPLES)
    g_model = p.add_argument_group("model", "which CLIP and where it runs")
    g_data = p.add_argument_group("data", "datasets, prompts and how many images")
    g_attacks = p.add_argument_group("attacks",
                                     "the oblivious attacks (made on the undefended model) and their budgets")
    g_defenses = p.add_argument_group("defenses",
                                      "test-time defenses and their settings (--defense-arg for any of them)")
    g_threat = p.add_argument_group("threat model", "oblivious, adaptive (attacks through each defense) or both")
    g_run = p.add_argument_group("run", "presets, batching, seeding, resume and output")
    add_model_args(g_model)
    d, a, f, t, r = g_data.add_argument, g_attacks.add_argument, g_defenses.add_argument, g_threat.add_argument, \
        g_run.add_argument
    d("--dataset", default=None,
      help="comma list of registry keys (cifar10,imagenet,...), CLIP_benchmark ids (imagenet1k,pets,cars,...) or "
           "webdataset mirrors (wds/cars, wds/vtab/cifar10, ...; see `counterclip datasets`) (required unless "
           "--preset gives them)")
    d("--data-root", default=None)
    d("--download", action="store_true",
      help="fetch missing datasets: torchvision where its download works, else the dataset's CLIP_benchmark "
           "webdataset mirror (wds/<name>) into the Hugging Face cache")
    d("--allow-partial", action="store_true",
      help="evaluate a dataset whose sample count differs from the known one (the record says so)")
    d("--prompts", choices=["clip", "reference"], default=None,
      help="class names and templates: clip (curated) or reference (as the reference TTC code forms them)"
           + real("prompts"))
    d("--limit", type=int, default=None,
      help="evaluate N samples per dataset (picked with --seed) (default: every test image)")
    a("--attack", default=None,
      help=f"comma list of none,{','.join(ATTACKS.names())} or your own pkg.module:ClassName" + real("attacks"))
    a("--attack-arg", action="append", default=None, metavar="NAME.KEY=VALUE",
      help="a keyword argument of one attack (repeatable; NAME. optional with one attack), checked against its "
           "signature, e.g. apgd-ce.restarts=2 or square.queries=1000; the adaptive attacks take theirs by name, "
           "e.g. eot-pgd.steps=100 or gate-aware.lambdas=(0,10,1000)")
    a("--eps", default=None, help="comma list of budgets in [0,1] pixel units, e.g. 1/255,4/255" + real("eps"))
    a("--steps", type=int, default=None, help="attack steps" + real("steps"))
    a("--step-size", default=None,
      help="attack step; 'auto' = max(1/255, 2.5*eps/steps), the paper's 1/255 at its budgets" + real("step_size"))
    a("--quantize", choices=["none", "round", "truncate"], default="none",
      help="serialise adversarial inputs to 8 bits before the defense (truncate: the R-TPT/CSR references' "
           "quirk), projected back into the eps-ball; default none")
    a("--aa-version", choices=["standard", "plus", "rand", "paper"], default="standard",
      help="the autoattack attack's version (paper = aa-paper: APGD-CE then APGD-DLR)")
    a("--aa-steps", type=int, default=100, help="iterations of AutoAttack's APGD/FAB parts")
    a("--square-queries", type=int, default=5000, help="Square's query budget (alone and in AutoAttack)")
    f("--defense", default=None,
      help=f"comma list of {','.join(DEFENSES.names())} or your own pkg.module:ClassName (see "
           "docs/extending.md)" + real("defenses"))
    f("--defense-arg", action="append", default=None, metavar="NAME.KEY=VALUE",
      help="a keyword argument of one defense (repeatable; NAME. optional with one defense), checked against its "
           "signature, e.g. ttc.tau_thres=auto or my_defense:MyDefense.k=3; the TTC flags below are its aliases "
           "(default: each defense's own settings)")
    f("--tau-thres", default="0.2",
      help="TTC's gate, or 'auto' (calibrated on held-out images); alias of ttc.tau_thres")
    f("--tau-quantile", type=float, default=0.1, help="the quantile 'auto' uses; alias of ttc.tau_quantile")
    f("--ttc-steps", type=int, default=2, help="alias of ttc.steps")
    f("--ttc-eps", default="4/255", help="alias of ttc.eps")
    f("--ttc-step-size", default="1/255", help="alias of ttc.step_size")
    f("--beta", type=float, default=2.0, help="alias of ttc.beta")
    f("--eval-draws", type=int, default=1,
      help="classify each final input on R draws of a randomised defense (extra fields in records)")
    f("--precision", choices=["fp32", "bf16", "fp16", "fp16-all"], default="fp32",
      help="bf16/fp16: the defense's passes only, attacks stay fp32; fp16-all: the reference code's mode, clean "
           "evaluation, attacks and defenses all under fp16 autocast (for comparison with it; exact only on a GPU)")
    t("--threat-model", choices=THREAT_MODELS, default="oblivious",
      help="oblivious (the paper's protocol), adaptive (attacks through each defense) or both")
    t("--adaptive-attack", default=None,
      help=f"comma list of {','.join(ADAPTIVE.names())} (tau-aware: gate-aware's name for TTC) (default: every "
           "one that applies, read from each defense's description)")
    t("--eot-samples", type=int, default=8, help="EOT draws per step for randomised defenses")
    r("--preset", choices=sorted(PRESETS), default=None,
      help="paper: the paper's full protocol; tiny: the embedded model with larger budgets (default: none; "
           "flags given override the preset's)")
    r("--batch-size", type=int, default=64, help="images per batch (a saved chunk of every cell)")
    r("--seed", type=int, default=0, help="picks the --limit images and seeds every random draw")
    r("--overwrite", action="store_true", help="recompute cells that are already finished")
    r("--on-invalid", choices=["fail", "skip"], default="fail",
      help="an output that fails its checks (logits (B, C) finite; adversarial inputs finite, in [0,1] and the "
           "eps-ball; gate scores (B,) finite): fail its cell in one line, no record (exit status 3 after the "
           "other cells), or skip: record it with those samples counted wrong, marked invalid")
    r("--output", required=True, help="directory for records (state lives in OUTPUT/.state)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("report", help="merge eval records into markdown/CSV tables and figures")
    p.add_argument("run_dir", help="an eval --output directory")
    p.add_argument("--out", default=None, help="where to write (default: RUN_DIR)")
    p.add_argument("--format", choices=["markdown", "latex"], default="markdown",
                   help="results.md, results.csv and figures are always written; latex adds results.tex "
                        "(booktabs tables; \\usepackage{booktabs})")
    p.add_argument("--classes", action="append", metavar="NAME=CLASSES", default=None,
                   help="also report the test images of these classes apart (repeatable), e.g. --classes seen=0-4 "
                        "--classes unseen=5-9: each record restricted to the group, as the dataset 'DATASET [NAME]'")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("demo", help="TTC on the embedded model: clean, attacked, attacked + TTC (a few minutes)")
    p.add_argument("--limit", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_demo)


def eval_config(args):
    from .attacks import ADAPTIVE
    from .budgets import parse_list
    from .errors import CounterclipError
    from .evaluation.config import PRESETS, EvalConfig
    from .plugins import parse_assignments

    preset = PRESETS.get(args.preset, {})
    given = lambda v, key, default: v if v is not None else preset.get(key, default)  # noqa: E731
    datasets = parse_list(args.dataset) if args.dataset else preset.get("datasets")
    if not datasets:
        raise CounterclipError("eval needs --dataset (comma list) or --preset")
    adaptive = parse_list(args.adaptive_attack) if args.adaptive_attack else None
    attacks = parse_list(args.attack) if args.attack else preset.get("attacks", ["none"])
    defenses = parse_list(args.defense) if args.defense else preset.get("defenses", ["none"])
    return EvalConfig(
        output=args.output, model=args.model or preset.get("model", "tiny-fmnist"),
        pretrained=args.pretrained if args.model or args.pretrained else preset.get("pretrained"), vision_checkpoint=args.vision_checkpoint, datasets=datasets,
        data_root=args.data_root, download=args.download, allow_partial=args.allow_partial,
        attacks=attacks, attack_args=parse_assignments(args.attack_arg, attacks, "attack", ADAPTIVE.names()),
        eps=parse_list(args.eps) if args.eps else preset.get("eps", ["1/255"]),
        steps=given(args.steps, "steps", 10), step_size=given(args.step_size, "step_size", "auto"),
        defenses=defenses, defense_args=parse_assignments(args.defense_arg, defenses, "defense"),
        tau_thres=args.tau_thres, tau_quantile=args.tau_quantile, ttc_steps=args.ttc_steps, ttc_eps=args.ttc_eps,
        ttc_step_size=args.ttc_step_size, beta=args.beta, threat_model=args.threat_model,
        adaptive_attacks=adaptive, eot_samples=args.eot_samples, limit=args.limit, batch_size=args.batch_size,
        seed=args.seed, device=args.device, overwrite=args.overwrite, image_size=preset.get("image_size"),
        resize=preset.get("resize"), precision=args.precision, prompts=given(args.prompts, "prompts", "clip"),
        quantize=args.quantize, aa_version=args.aa_version, aa_steps=args.aa_steps,
        square_queries=args.square_queries, eval_draws=args.eval_draws, attack_eps=preset.get("attack_eps"),
        on_invalid=args.on_invalid)


def _cmd_eval(args) -> int:
    from .evaluation.grid import GridRunner

    runner = GridRunner(eval_config(args))
    runner.run()
    # 3: the run finished but cells failed their output checks (1 is a crash, 2 bad input); the summary lists them
    return 3 if runner.failures else 0


def _cmd_report(args) -> int:
    from .report import build_report

    formats = ("markdown",) if args.format == "markdown" else ("markdown", args.format)
    written = build_report(args.run_dir, args.out, formats=formats, class_groups=args.classes)
    for rel in sorted(written):
        print(written[rel])
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(limit=args.limit, batch_size=args.batch_size, seed=args.seed, device=args.device)
    return 0
