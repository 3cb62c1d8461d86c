"""Building a run's attacks and defenses from its configuration: every name goes through its registry (a user's
``pkg.mod:Cls`` included), the run-wide settings reach the methods whose signature takes them, and gates with an
``"auto"`` threshold are calibrated on held-out clean images (``CalibratedGate``, TTC's tau included)."""

from __future__ import annotations

import torch

from ..attacks import ADAPTIVE, make_attack
from ..attacks.pgd import auto_step_size
from ..budgets import parse_eps
from ..defenses import DEFENSES, build_defense
from ..defenses._gate import CalibratedGate
from ..plugins import build_plugin_attack, build_plugin_defense, is_plugin
from ..rng import per_sample_generators
from .describe import names_of
from .sampling import select_indices


def step_size_for(cfg, eps: float, steps) -> float:
    """``--step-size``, or its ``auto`` rule for ``steps`` (an attack's own ``steps`` from ``--attack-arg``
    gets a step that can still cross its budget)."""
    return auto_step_size(eps, int(steps)) if cfg.step_size == "auto" else parse_eps(cfg.step_size)


def attack_for(cfg, name: str, eps: float):
    """The oblivious attack ``name`` at ``eps``: a registered word, a user's class, or a given factory."""
    args = cfg.attack_args.get(name, {})
    obj = cfg.objects.get(name)  # counterclip.evaluate(...): an attack class, or a factory eps -> attack
    if isinstance(obj, type) or (obj is None and is_plugin(name)):
        return build_plugin_attack(obj or name, eps, args, steps=cfg.steps,
                                   step_size=step_size_for(cfg, eps, args.get("steps", cfg.steps)))
    if obj is not None:
        return obj(eps)
    step = step_size_for(cfg, eps, args.get("steps", cfg.steps))
    return make_attack(name, eps, {"steps": cfg.steps, "step_size": step, "queries": cfg.square_queries,
                                   "aa_version": cfg.aa_version, "aa_steps": cfg.aa_steps}, args)


def adaptive_for(cfg, name: str, eps: float, defense):
    """The adaptive attack ``name`` at ``eps`` against ``defense``, with its ``--attack-arg`` given under any of
    its names (its own last)."""
    args = {}
    for n in sorted(names_of(name), key=lambda n: n == name):
        args.update(cfg.attack_args.get(n, {}))
    kw = {"steps": cfg.steps, "step_size": step_size_for(cfg, eps, args.get("steps", cfg.steps)),
          "eot_samples": cfg.eot_samples}
    if name in ("eot-pgd", "bpda-pgd") and not getattr(defense, "randomized", False):
        kw["eot_samples"] = 1
    return ADAPTIVE.build(name, eps, **{**kw, **args})


def composed_through(cfg, name: str, eps: float, defense):
    """A composed attack (AutoAttack) for a run through ``defense``: its APGD components average their gradients
    over ``--eot-samples`` draws of a randomised defense in every version (``rand`` keeps its own)."""
    aa = attack_for(cfg, name, eps)
    if getattr(defense, "randomized", False) and cfg.eot_samples > 1 and aa.version != "rand":
        aa.eot_all_versions, aa.eot_iter = True, int(cfg.eot_samples)
    return aa


def defense_for(cfg, name: str, tau_encoder, calibrate):
    """The defense ``name`` with its ``--defense-arg`` (over the TTC alias flags); ``calibrate(defense)`` sets an
    ``"auto"`` gate."""
    args = cfg.defense_args.get(name, {})
    if name in cfg.objects:  # counterclip.evaluate(...): the instance itself
        d = cfg.objects[name]
        if getattr(d, "auto", False) and hasattr(d, "calibrate"):  # an "auto" gate: calibrated as by name
            calibrate(d)
        return d
    if is_plugin(name):
        return build_plugin_defense(name, args)
    if name in ("ttc", "rn"):
        kw = {"eps": cfg.ttc_eps, "precision": "fp16" if cfg.precision == "fp16-all" else cfg.precision}
        if name == "ttc":
            kw.update(steps=cfg.ttc_steps, step_size=cfg.ttc_step_size, beta=cfg.beta,
                      tau_thres=cfg.tau_thres if cfg.tau_thres == "auto" else float(cfg.tau_thres),
                      tau_quantile=cfg.tau_quantile, tau_encoder=tau_encoder)
        d = build_defense(name, **{**kw, **args})
        if name == "ttc" and d.auto:
            calibrate(d)
        return d
    if issubclass(DEFENSES.resolve(name), CalibratedGate):
        # a paper's gate threshold is tuned for its backbone: eval calibrates it on held-out clean images
        d = build_defense(name, **{"gate_thres": "auto", **args})
        if d.auto:
            calibrate(d)
        return d
    return build_defense(name, **args)


def calibrate(cfg, data, indices, image_size, encoder, device, gate) -> None:
    """An ``"auto"`` gate (TTC's tau_thres, every CalibratedGate): the quantile of its clean score on held-out
    images (the training split when the dataset has one, else test images outside the evaluated selection)."""
    from ..data import get_dataset
    from ..errors import CounterclipError

    n_cal = 512
    try:
        if data.name == "imagefolder":  # one folder, no splits
            raise CounterclipError("imagefolder has no train split")
        held = get_dataset(data.name, split="train", data_root=cfg.data_root, image_size=image_size,
                           resize=cfg.resize, prompts=cfg.prompts,
                           allow_partial=cfg.allow_partial)  # as the evaluated split was read
        source, pool = f"{data.name} train split", torch.arange(len(held))
    except (CounterclipError, ValueError) as e:  # no train split here: held-out test images instead
        why = str(e)
        held = data
        used = set(indices.tolist())
        pool = torch.tensor([i for i in range(len(held)) if i not in used], dtype=torch.long)
        source = f"{data.name} {data.split} images outside the evaluated selection"
        if len(pool) == 0:
            raise CounterclipError("--tau-thres auto needs held-out images: this dataset has no usable train "
                                   f"split here ({why}) and --limit selects all of it; lower --limit") from None
    pick = pool[select_indices(len(pool), n_cal, cfg.seed + 1)]
    ds = held.dataset
    x = ds.x[pick] if hasattr(ds, "x") else torch.stack([ds[int(i)][0] for i in pick])
    gens = per_sample_generators(cfg.seed, data.name + ":calibration", pick.tolist(), "tau")
    gate.calibrate(encoder, x.to(device), generator=gens)
    gate.calibration["source"] = source
