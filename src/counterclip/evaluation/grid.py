"""``counterclip eval``: datasets x attacks x budgets x defenses x threat models, resumable and shardable.

Protocol (the paper's defense-oblivious one, spec section 3, plus adaptive attacks): adversarial examples are
made once per attack configuration against the undefended classifier, cached under ``DIR/.state/``, and reused
by every defense; adaptive attacks target each defense itself. Every random draw (attack start, TTC's delta0,
EOT) derives from (seed, dataset, sample index), and ``--limit`` picks samples before sharding, so numbers do
not depend on batch size, process count or a resume. Work is saved atomically after every batch.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..attacks import attack_arg_kwargs, build_attack
from ..attacks.pgd import auto_step_size
from ..budgets import eps_str, parse_eps
from ..defenses import DEFENSES, TTC, build_defense
from ..defenses._gate import CalibratedGate
from ..rng import per_sample_generators
from ..plugins import build_plugin_attack, build_plugin_defense, is_plugin
from .clip_benchmark import add_benchmark_fields
from . import composite
from .config import EvalConfig
from .describe import adaptive_attacks_for, cost_summary, gate_pass, gate_summary, run_counted
from .describe import GATE_ATTACKS, gradient_choice, names_of
from .describe import wanted as adaptive_wanted
from .quantize import serialise
from .distributed import Dist
from .metrics import accuracy_metrics
from .sampling import select_indices
from .integrity import seal_record
from ..progress import per_chunk
from .chunks import run_chunks, saved_work
from .locks import exclusive
from .signals import Preempted, graceful_stop, stop_requested
from .space import check_space, estimate_bytes
from .settings import run_settings
from .state import file_sha256, json_plain, read_finished, require_tensors, stable_hash, write_json, write_npz
from .zeroshot import versions


class GridRunner:
    def __init__(self, cfg: EvalConfig, log=print):
        from .. import load_model

        from ..devices import check_device

        self.cfg = cfg.validate()
        check_device(cfg.device)
        self.log = log
        self.dist = Dist(cfg.device)
        self.device = self.dist.device
        self.out = Path(cfg.output)
        self.state = self.out / ".state"
        given = cfg.objects.get("__model__")  # counterclip.evaluate(model=<ClipModel>)
        self.model = given.to(self.device) if given is not None else load_model(
            cfg.model, cfg.pretrained, device=self.device, vision_checkpoint=cfg.vision_checkpoint)
        self.model_id = {"model": cfg.model, "pretrained": cfg.pretrained,
                         "vision_checkpoint_sha256": file_sha256(cfg.vision_checkpoint) if cfg.vision_checkpoint
                         else None, "weights_sha256": weights_fingerprint(cfg.model, cfg.pretrained) if given is None
                         else module_fingerprint(given),
                         "activation": self.model.activation}
        self._config_keys: dict[Path, str] = {}  # record path -> its full configuration key (record_path)
        self._fresh: set[Path] = set()  # cell folders (re)started in this run (--overwrite)
        self.summary: list[dict] = []
        self.written: list[Path] = []

    # -- bookkeeping -----------------------------------------------------------------------------------------
    def _bar(self, total, desc):
        return tqdm(total=total, desc=desc, unit="img", leave=False, disable=not self.dist.is_main)

    def autocast(self):
        """fp16-all (the reference code's mode): fp16 autocast around everything the cells compute; else nothing."""
        if self.cfg.precision != "fp16-all":
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=torch.float16)

    def under_precision(self, compute):
        if self.cfg.precision != "fp16-all":
            return compute

        def run(cs, ce):
            with self.autocast():
                return compute(cs, ce)

        return run

    def cell(self, folder: Path, compute, desc: str, gather_keys: tuple) -> dict | None:
        """Run ``compute(start, end)`` for this rank's chunks, saving each chunk atomically and skipping saved
        ones; return the gathered per-sample ``gather_keys`` over all ranks (on every rank)."""
        if self.cfg.overwrite and folder not in self._fresh:
            if self.dist.is_main and folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            self.dist.barrier()  # no rank writes a chunk before rank 0 has cleared the folder
        self._fresh.add(folder)
        t0 = time.time()
        bar = self._bar(self._end - self._start, desc)
        ranges = [(cs, min(cs + self.cfg.batch_size, self._end))
                  for cs in range(self._start, self._end, self.cfg.batch_size)]
        done = run_chunks(folder, ranges, *per_chunk(self.under_precision(compute), bar))  # bar moves per step
        parts = [{k: res[k] for k in gather_keys if k in res} for res in done]  # old chunks may lack a newer key
        bar.close()
        keys = [k for k in gather_keys if all(k in p for p in parts)]
        local = {k: torch.cat([p[k] for p in parts]) if parts else torch.empty(0) for k in keys}
        merged = self.dist.gather(local)
        self.last_elapsed = time.time() - t0
        return {k: torch.cat([m[k] for m in merged]) for k in keys if all(k in m for m in merged)}

    def batch(self, cs: int, ce: int):
        idx = self.indices[cs:ce]
        ds = self.data.dataset
        if hasattr(ds, "x"):
            x, y = ds.x[idx], ds.y[idx]
        else:
            items = [ds[int(i)] for i in idx]
            x, y = torch.stack([t[0] for t in items]), torch.tensor([int(t[1]) for t in items])
        return x.to(self.device), y.to(self.device), idx

    def gens(self, idx, stream: str):
        return per_sample_generators(self.cfg.seed, self.data.name, idx.tolist(), stream)

    # -- building blocks -------------------------------------------------------------------------------------
    def step_size_for(self, eps: float, steps) -> float:
        """``--step-size``, or its ``auto`` rule for ``steps`` (an attack's own ``steps`` from ``--attack-arg``
        gets a step that can still cross its budget)."""
        cfg = self.cfg
        return auto_step_size(eps, int(steps)) if cfg.step_size == "auto" else parse_eps(cfg.step_size)

    def attack_for(self, name: str, eps: float):
        cfg = self.cfg
        args = cfg.attack_args.get(name, {})
        obj = cfg.objects.get(name)  # counterclip.evaluate(...): an attack class, or a factory eps -> attack
        if isinstance(obj, type) or (obj is None and is_plugin(name)):
            return build_plugin_attack(obj or name, eps, args, steps=cfg.steps,
                                       step_size=self.step_size_for(eps, args.get("steps", cfg.steps)))
        if obj is not None:
            return obj(eps)
        kw = attack_arg_kwargs(name, args)  # AutoAttack's own steps are aa_steps there
        step = self.step_size_for(eps, kw.get("steps", cfg.steps))
        return build_attack(name, eps, **{"steps": cfg.steps, "step_size": step, "queries": cfg.square_queries,
                                          "aa_version": cfg.aa_version, "aa_steps": cfg.aa_steps, **kw})

    def defense_for(self, name: str):
        cfg = self.cfg
        args = cfg.defense_args.get(name, {})  # --defense-arg NAME.key=value, over the TTC alias flags
        if name in cfg.objects:  # counterclip.evaluate(...): the instance itself
            d = cfg.objects[name]
            if getattr(d, "auto", False) and hasattr(d, "calibrate"):  # an "auto" gate: calibrated as by name
                self.calibrate(d)
            return d
        if is_plugin(name):
            return build_plugin_defense(name, args)
        if name in ("ttc", "rn"):
            kw = {"eps": cfg.ttc_eps, "precision": "fp16" if cfg.precision == "fp16-all" else cfg.precision}
            if name == "ttc":
                kw.update(steps=cfg.ttc_steps, step_size=cfg.ttc_step_size, beta=cfg.beta,
                          tau_thres=cfg.tau_thres if cfg.tau_thres == "auto" else float(cfg.tau_thres),
                          tau_quantile=cfg.tau_quantile, tau_encoder=self.tau_encoder)
            d = build_defense(name, **{**kw, **args})
            if name == "ttc" and d.auto:
                self.calibrate(d)
            return d
        if isinstance(DEFENSES.get(name), type) and issubclass(DEFENSES[name], CalibratedGate):
            # a paper's gate threshold is tuned for its backbone: eval calibrates it on held-out clean images
            d = build_defense(name, **{"gate_thres": "auto", **args})
            if d.auto:
                self.calibrate(d)
            return d
        return build_defense(name, **args)

    @property
    def tau_encoder(self):
        # robust finetuned towers: tau from the original CLIP encoder (spec section 2)
        return self.model.encode_image_base if self.model.base_visual is not None else None

    def calibrate(self, ttc: TTC) -> None:
        """tau_thres="auto": the q-quantile of clean tau on held-out images (the training split when the
        dataset has one, else test images outside the evaluated selection)."""
        from ..data import get_dataset
        from ..errors import CounterclipError

        n_cal = 512
        try:
            if self.data.name == "imagefolder":  # one folder, no splits
                raise CounterclipError("imagefolder has no train split")
            held = get_dataset(self.data.name, split="train", data_root=self.cfg.data_root,
                               image_size=self.image_size, resize=self.cfg.resize, prompts=self.cfg.prompts,
                               allow_partial=self.cfg.allow_partial)  # as the evaluated split was read
            source, pool = f"{self.data.name} train split", torch.arange(len(held))
        except (CounterclipError, ValueError) as e:  # no train split here: held-out test images instead
            why = str(e)
            held = self.data
            used = set(self.indices.tolist())
            pool = torch.tensor([i for i in range(len(held)) if i not in used], dtype=torch.long)
            source = f"{self.data.name} {self.data.split} images outside the evaluated selection"
            if len(pool) == 0:
                raise CounterclipError("--tau-thres auto needs held-out images: this dataset has no usable train "
                                       f"split here ({why}) and --limit selects all of it; lower --limit") from None
        pick = pool[select_indices(len(pool), n_cal, self.cfg.seed + 1)]
        ds = held.dataset
        x = ds.x[pick] if hasattr(ds, "x") else torch.stack([ds[int(i)][0] for i in pick])
        gens = per_sample_generators(self.cfg.seed, self.data.name + ":calibration", pick.tolist(), "tau")
        ttc.calibrate(self.model.encode_image, x.to(self.device), generator=gens)
        ttc.calibration["source"] = source

    # -- the run ---------------------------------------------------------------------------------------------
    def run(self) -> list[Path]:
        t0 = time.time()
        records, cells, samples = saved_work(self.out) if not self.cfg.overwrite else (0, 0, 0)
        if (records or cells) and self.dist.is_main:
            self.log(f"resuming in {self.out}: {records} finished record{'s' * (records != 1)} and {cells} "
                     f"cell{'s' * (cells != 1)} with saved chunks ({samples} samples) from earlier runs; what "
                     "matches this run's settings is reused, not recomputed")
        try:
            with graceful_stop([self.model.visual, self.model.base_visual]):
                try:
                    for name in self.cfg.datasets:
                        self.run_dataset(name)
                except Exception:
                    if stop_requested():  # a peer rank stopped first and broke a collective: same stop
                        raise Preempted(stop_requested()) from None
                    raise
        finally:
            self.dist.close()
        if self.dist.is_main:
            self.print_summary(time.time() - t0)
        return self.written

    def run_dataset(self, name: str) -> None:
        from ..data import get_dataset
        from ..zeroshot import ZeroShotClassifier

        cfg = self.cfg
        self.image_size = cfg.image_size or self.model.image_size
        self.data = get_dataset(name, data_root=cfg.data_root, download=cfg.download, image_size=self.image_size,
                                resize=cfg.resize, prompts=cfg.prompts, allow_partial=cfg.allow_partial)
        with self.autocast():  # fp16-all: the class text is encoded under autocast too, as the reference does
            self.clf = ZeroShotClassifier(self.model, self.data.classnames, self.data.templates)
        self.indices = select_indices(len(self.data), cfg.limit, cfg.seed)
        self._start, self._end = self.dist.shard(len(self.indices))
        self.base_key = {**self.model_id, "dataset": self.data.name, "split": self.data.split,
                         "source": self.data.source,
                         "data": self.data.cache_fields(),
                         "classnames": self.data.classnames, "templates": self.data.templates,
                         "preprocess": self.data.preprocess, "image_size": self.image_size,
                         "indices": stable_hash(self.indices.tolist(), 32), "seed": cfg.seed, "version": __version__}
        if cfg.precision == "fp16-all":  # every cell differs (fp32 keys stay as they were)
            self.base_key["precision"] = cfg.precision
        self.dstate = self.state / self.data.name
        self.check_space()
        self.obliv: dict = {}  # (attack, eps, defense) -> robust correct, for the adaptive comparison
        self.oblivious_adv: dict = {}  # eps -> the PGD adversarial examples' cell, which tau-aware extends
        defenses = {d: self.defense_for(d) for d in cfg.defenses}
        # the sidecars' tau is measured with --ttc-eps (and the base tower with a robust checkpoint)
        if cfg.quantize != "none":  # keys of earlier runs (no serialisation stage) stay valid
            self.base_key["quantize"] = cfg.quantize
        self.base_key["tau"] = {"eps": parse_eps(cfg.ttc_eps), "base_tower": self.tau_encoder is not None}
        self.tau_ttc = TTC(eps=cfg.ttc_eps, tau_thres=float("inf"), tau_encoder=self.tau_encoder)

        def clean_compute(cs, ce):
            x, y, idx = self.batch(cs, ce)
            tau = self.tau_ttc.tau_of(self.clf.encode_image, x, generator=self.gens(idx, "tau"))
            return {"y": y.cpu(), "idx": idx, "tau": tau.float().cpu()}

        with torch.no_grad():
            clean = self.cell(self.dstate / f"clean-{stable_hash(self.base_key)}", clean_compute,
                              f"{name} clean", ("y", "idx", "tau"))
        self.clean = clean
        self.labels = clean["y"]
        clean_def, clean_time = {}, {}
        self.clean_gate, self.clean_cost = {}, {}
        for d in defenses:
            clean_def[d] = self.defense_cell(d, defenses[d], None, None)
            clean_time[d] = self.last_elapsed
            self.clean_gate[d], self.clean_cost[d] = self.last_gate, self.last_cost

        configs = [("none", 0.0)] if "none" in cfg.attacks else []
        configs += [(a, parse_eps(e)) for a in cfg.attacks if a != "none"
                    for e in sorted(cfg.eps, key=parse_eps)
                    if parse_eps(e) in [parse_eps(v) for v in (cfg.attack_eps or {}).get(a, [e])]]
        for a in [a for a in cfg.attacks if composite.min_classes(a) > self.clf.num_classes]:
            self.log(f"{self.data.name}: {a} skipped (needs at least {composite.min_classes(a)} classes, this task "
                     f"has {self.clf.num_classes})")
        configs = [(a, e) for a, e in configs if composite.min_classes(a) <= self.clf.num_classes]
        # Square after the white-box attacks, whatever the listed order: its black-box-beats-white-box check
        # compares with their results on the same samples
        configs.sort(key=lambda c: c[0] == "square")
        for aname, eps in configs:
            if aname == "none":
                for d in defenses:
                    if self.finished(self.record_path(aname, eps, None, d, defenses[d], "oblivious")) is None:
                        self.write_record(aname, eps, None, d, defenses[d], "oblivious", clean_def[d], clean_def[d],
                                          clean["tau"], clean["tau"], time_s=clean_time[d],
                                          cost=self.clean_cost[d], gate=self.clean_gate[d])
                continue
            attack = self.attack_for(aname, eps)
            akey = {**self.base_key, "attack": attack.config()}
            adv_tag = f"{path_name(aname)}-{eps_str(eps).replace('/', '-')}"
            adv_dir = self.dstate / f"adv-{adv_tag}-{stable_hash(akey)}"
            wanted = [d for d in defenses if cfg.threat_model in ("oblivious", "both") or d == "none"]
            todo = []
            for d in wanted:
                done = self.finished(self.record_path(aname, eps, attack, d, defenses[d], "oblivious"))
                if done is None:
                    todo.append(d)
                else:
                    self.obliv[(aname, eps, d)] = done
            if aname == "pgd":
                self.oblivious_adv[eps] = (adv_dir, attack)
            if not todo:
                continue
            adv = self.adv_cell(adv_dir, attack)
            attack_time = self.last_elapsed
            for d in todo:
                rob = self.defense_cell(d, defenses[d], adv_dir, attack)
                self.obliv[(aname, eps, d)] = rob
                self.write_record(aname, eps, attack, d, defenses[d], "oblivious", clean_def[d], rob,
                                  clean["tau"], adv["tau_adv"], time_s=clean_time[d] + self.last_elapsed,
                                  attack_time_s=attack_time, cost=self.last_cost, gate=self.last_gate,
                                  broken_by=adv.get("broken_by"), correct_draws=self.last_draws)
        if cfg.threat_model in ("adaptive", "both"):
            for e in sorted({parse_eps(e) for e in cfg.eps} if any(a != "none" for a in cfg.attacks) else set()):
                for d, defense in defenses.items():
                    for an in adaptive_attacks_for(defense):  # read from the defense's self-description
                        if adaptive_wanted(an, cfg.adaptive_attacks):
                            self.adaptive(an, e, d, defense, clean_def[d])
                    if d != "none":  # AutoAttack through each of the defense's gradient modes
                        for an in [a for a in cfg.attacks if a in ("autoattack", "aa-paper")]:
                            if e in [parse_eps(v) for v in (cfg.attack_eps or {}).get(an, cfg.eps)]:
                                for mode in (getattr(defense, "differentiable_modes", ()) or ("bpda",)):
                                    self.adaptive(an, e, d, defense, clean_def[d], mode=mode)

    def adv_cell(self, folder: Path, attack):
        def compute(cs, ce):
            x, y, idx = self.batch(cs, ce)
            x_adv = attack(self.clf, x, y, generator=composite.attack_generators(self, attack, idx))
            delta = (x_adv - x).half()  # stored as fp16 perturbation; every reader re-projects it the same way
            x_adv = self.reproject(x, delta, attack.eps)
            with torch.no_grad():
                tau = self.tau_ttc.tau_of(self.clf.encode_image, x_adv, generator=self.gens(idx, "tau"))
            out = {"delta": delta.cpu(), "tau_adv": tau.float().cpu()}
            if composite.is_composite(attack):
                out["broken_by"] = attack.last_broken_by.cpu()
            return out

        return self.cell(folder, compute, f"{self.data.name} {attack.name} {eps_str(attack.eps)}",
                         ("tau_adv", "broken_by") if composite.is_composite(attack) else ("tau_adv",))

    def serialised(self, x, x_adv, eps):
        """The adversarial input as the defense receives it (``--quantize``: evaluation/quantize.py)."""
        return serialise(x, x_adv, eps, self.cfg.quantize)

    @staticmethod
    def reproject(x, delta, eps):
        return (x + delta.to(x.device, x.dtype).clamp(-eps, eps)).clamp(0, 1)

    def defense_cell(self, dname, defense, adv_dir, attack):
        which = "clean" if adv_dir is None else adv_dir.name
        key = {**self.base_key, "defense": dname, "params": defense.params(), "inputs": which}
        if self.cfg.eval_draws > 1:
            key["eval_draws"] = self.cfg.eval_draws
        folder = self.dstate / f"def-{path_name(dname)}-{stable_hash(key)}"

        def compute(cs, ce):
            x, y, idx = self.batch(cs, ce)
            if adv_dir is not None:
                chunk = require_tensors(adv_dir / f"{cs:08d}-{ce:08d}.pt")
                x = self.serialised(x, self.reproject(x, chunk["delta"], attack.eps), attack.eps)
            logits, cost = run_counted(defense, self.clf, x, self.gens(idx, f"defense:{dname}"))
            out = {"correct": (logits.argmax(-1).cpu() == y.cpu()), "cost": cost}
            if self.cfg.eval_draws > 1:
                out["draws"] = composite.eval_draws(self, defense, dname, x, y, idx, logits)
            gp = gate_pass(defense, self.clf, x, self.gens(idx, f"gate:{dname}"))
            return out if gp is None else {**out, "gate_pass": gp}

        label = "clean" if adv_dir is None else f"{attack.name} {eps_str(attack.eps)}"
        keys = ("correct", "cost", "gate_pass") + (("draws",) if self.cfg.eval_draws > 1 else ())
        res = self.cell(folder, compute, f"{self.data.name} {dname} on {label}", keys)
        self.last_cost, self.last_gate, self.last_draws = res.get("cost"), res.get("gate_pass"), res.get("draws")
        return res["correct"]

    def adaptive(self, an: str, eps: float, dname: str, defense, clean_correct, mode=None) -> None:
        from ..attacks.adaptive import build_adaptive
        from ..attacks.autoattack import AdaptiveAutoAttack

        cfg = self.cfg
        args = {}  # --attack-arg eot-pgd.steps=100 etc., given under any of the attack's names (its own last)
        for n in sorted(names_of(an), key=lambda n: n == an):
            args.update(cfg.attack_args.get(n, {}))
        kw = {"steps": cfg.steps, "step_size": self.step_size_for(eps, args.get("steps", cfg.steps))}
        if an in ("eot-pgd", "bpda-pgd"):
            kw["eot_samples"] = cfg.eot_samples if getattr(defense, "randomized", False) else 1
        else:
            kw["eot_samples"] = cfg.eot_samples
        if mode is not None:  # a composed attack (AutoAttack) through the defense's gradient mode
            atk = AdaptiveAutoAttack(self.attack_for(an, eps), mode,
                                     eot_samples=cfg.eot_samples if getattr(defense, "randomized", False) else None)
            an = atk.name
        else:
            atk = build_adaptive(an, eps=eps, **{**kw, **args})
        init = self.oblivious_adv.get(eps) if an in GATE_ATTACKS else None
        if self.finished(self.record_path(an, eps, atk, dname, defense, "adaptive", atk,
                                          x_init=init[1] if init else None)) is not None:
            return
        key = {**self.base_key, "adaptive": atk.config(), "defense": dname, "params": defense.params(),
               "x_init": init[0].name if init else None}
        if cfg.eval_draws > 1:  # its chunks then hold the re-drawn correctness too (keys of R = 1 unchanged)
            key["eval_draws"] = cfg.eval_draws
        tag = f"{an}-{path_name(dname)}-{eps_str(eps).replace('/', '-')}"
        folder = self.dstate / f"adaptive-{tag}-{stable_hash(key)}"
        if init is not None:  # its chunks may be gone (a deleted .state): loads them, or remakes them
            self.adv_cell(init[0], init[1])

        def compute(cs, ce):
            x, y, idx = self.batch(cs, ce)
            x_init = None
            if init is not None:
                x_init = self.reproject(x, require_tensors(init[0] / f"{cs:08d}-{ce:08d}.pt")["delta"], init[1].eps)
            gens = (composite.attack_generators(self, atk, idx, f"adaptive:{{name}}-{mode}:{dname}:{{eps}}")
                    if mode is not None else self.gens(idx, f"adaptive:{an}:{dname}:{eps}"))
            x_adv = atk(defense, self.clf, x, y, generator=gens, x_init=x_init)
            x_adv = self.serialised(x, self.reproject(x, (x_adv - x).half(), eps), eps)
            with torch.no_grad():
                logits, cost = run_counted(defense, self.clf, x_adv, self.gens(idx, f"defense:{dname}"))
                tau = self.tau_ttc.tau_of(self.clf.encode_image, x_adv, generator=self.gens(idx, "tau"))
            out = {"correct": logits.argmax(-1).cpu() == y.cpu(), "tau_adv": tau.float().cpu(), "cost": cost}
            if cfg.eval_draws > 1:
                out["draws"] = composite.eval_draws(self, defense, dname, x_adv, y, idx, logits)
            if mode is not None:
                out["broken_by"] = atk.last_broken_by.cpu()
            gp = gate_pass(defense, self.clf, x_adv, self.gens(idx, f"gate:{dname}"))
            return out if gp is None else {**out, "gate_pass": gp}

        keys = ("correct", "tau_adv") + (("draws",) if cfg.eval_draws > 1 else ()) + (("broken_by",) if mode else ())
        with torch.enable_grad():
            res = self.cell(folder, compute, f"{self.data.name} {an} -> {dname} {eps_str(eps)}",
                            ("correct", "tau_adv", "cost", "gate_pass") + keys[2:])
        self.write_record(an, eps, atk, dname, defense, "adaptive", clean_correct, res["correct"],
                          self.clean["tau"], res["tau_adv"], adaptive=atk, time_s=self.last_elapsed,
                          cost=res.get("cost"), gate=res.get("gate_pass"), broken_by=res.get("broken_by"),
                          correct_draws=res.get("draws"), x_init=init[1] if init else None)

    # -- records ---------------------------------------------------------------------------------------------
    def attack_record_cfg(self, aname, eps, attack) -> dict:
        cfg = {"name": aname, "eps": eps, "eps_str": eps_str(eps), "steps": 0, "step_size": 0.0}
        if attack is not None:
            c = attack.config()
            cfg.update(steps=c.get("steps"), step_size=c.get("step_size"),
                       **{k: v for k, v in c.items() if k not in cfg})
        return cfg

    def record_path(self, aname, eps, attack, dname, defense, threat, adaptive=None, x_init=None) -> Path:
        path, self._config_keys[path] = self.record_key(aname, eps, attack, dname, defense, threat, adaptive,
                                                        x_init)
        return path

    def record_key(self, aname, eps, attack, dname, defense, threat, adaptive=None,
                   x_init=None) -> tuple[Path, str]:
        """The record's path and its full configuration key (kept in the record, checked on resume)."""
        key = {**self.base_key, "attack": self.attack_record_cfg(aname, eps, attack), "defense": dname,
               "params": defense.params(), "threat_model": threat,
               "adaptive": adaptive.config() if adaptive is not None else None, "limit": self.cfg.limit}
        if x_init is not None:  # a gate attack extends the oblivious point: another oblivious attack, another record
            key["x_init"] = x_init.config()
        if self.cfg.eval_draws > 1:  # a record with re-drawn metrics is another record (keys of R = 1 unchanged)
            key["eval_draws"] = self.cfg.eval_draws
        stem = (f"{path_name(aname)}_{eps_str(eps).replace('/', '-')}_{path_name(dname)}_{threat}_"
                f"{stable_hash(key, 8)}")
        return self.out / self.data.name / f"{stem}.json", stable_hash(key, 32)

    def finished(self, path: Path):
        """A finished cell's per-sample robust correctness (its record and sidecar exist), else None. Finished
        cells are never recomputed unless --overwrite."""
        if self.cfg.overwrite:
            return None
        found = read_finished(path, self._config_keys.get(path))
        if found is None or "robust_correct" not in found[1]:
            return None
        rec, robust = found[0], torch.from_numpy(found[1]["robust_correct"].astype(bool))
        if self.dist.is_main:
            self.summary.append(rec)
            self.written.append(path)
        return robust

    def write_record(self, aname, eps, attack, dname, defense, threat, clean_correct, robust_correct,
                     tau_clean, tau_adv, adaptive=None, time_s=None, attack_time_s=None, cost=None,
                     gate=None, broken_by=None, correct_draws=None, x_init=None) -> None:
        if not self.dist.is_main:
            return
        cfg = self.cfg
        attack_cfg = self.attack_record_cfg(aname, eps, attack)
        params = defense.params()
        if dname == "ttc" and self.tau_encoder is not None:
            params["tau_encoder"] = "the base model's original vision tower (spec section 2)"
        n = len(robust_correct)
        nc, nr = int(clean_correct.sum()), int(robust_correct.sum())
        rec = {"model": cfg.model, "pretrained": cfg.pretrained, "vision_checkpoint": cfg.vision_checkpoint,
               "activation": self.model.activation,
               "dataset": self.data.name, "split": self.data.split, "attack": attack_cfg,
               "defense": {"name": dname, "params": params}, "threat_model": threat,
               "metrics": {**accuracy_metrics("clean", nc, n), **accuracy_metrics("robust", nr, n), "n_samples": n},
               "seed": cfg.seed, "limit": cfg.limit, "prompts": self.data.prompts, "templates": self.data.templates,
               "preprocess": self.data.preprocess, "adv_storage": "fp16 perturbation, re-projected on load",
               "quantize": cfg.quantize, "precision": cfg.precision}
        rec.update(self.data.record_fields())  # source, dataset_size, split_note, count_check (issue 9)
        add_benchmark_fields(rec)  # CLIP_benchmark's pretrained (a string), task, language, metrics.acc1
        if adaptive is not None:
            rec["adaptive_attack"] = adaptive.config()
            rec["adaptive_attack"]["gradient"] = gradient_choice(defense, adaptive)
            if x_init is not None:  # the oblivious attack whose point it extends (its knobs label it in the report)
                rec["adaptive_attack"]["x_init"] = {k: v for k, v in x_init.config().items()
                                                    if k not in ("eps", "eps_str")}
        sidecar_extra = {}
        if correct_draws is not None:
            rec["metrics"].update(composite.draws_metrics(correct_draws))
            sidecar_extra["robust_correct_draws"] = correct_draws.numpy().astype(bool)
        if broken_by is not None:
            composed = adaptive if adaptive is not None else attack
            rec["autoattack"] = composite.stage_record(composed, broken_by, self.clf.num_classes)
            sidecar_extra["broken_by"] = composite.broken_by_labels(composed, broken_by, self.clf.num_classes)
        self._stages = rec.get("autoattack")
        rec["sanity"] = self.sanity_for(aname, eps, attack, dname, defense, threat, nr / n if n else 0.0, n,
                                        adaptive)
        # seconds this run spent on the record's own cells (0 for cells resumed from saved chunks); the attack
        # generation time, shared by every defense of an oblivious attack, is given apart
        rec["time_s"] = round(time_s, 2) if time_s is not None else None
        if attack_time_s is not None:
            rec["attack_time_s"] = round(attack_time_s, 2)
        # the defense's cost on this record's inputs: encoder passes per image (counted) and images/s (measured)
        rec["cost"] = cost_summary(cost)
        g = gate_summary(defense, self.clean_gate.get(dname), gate)
        if g is not None:
            rec["gate"] = g
        rec["versions"] = versions()
        rec["settings"] = run_settings(self.cfg, self.model_id, __version__)  # the report never pools unlike ones
        if "skipped_images" in self.data.extra:  # hostile or broken files left out of an image folder
            rec["skipped_images"] = self.data.extra["skipped_images"]
        path, config_key = self.record_key(aname, eps, attack, dname, defense, threat, adaptive, x_init)
        rec["sidecar"] = path.with_suffix(".npz").name
        with exclusive(path.parent):  # a concurrent writer's record and sidecar never interleave with ours
            self._write_pair(path, rec, config_key, {
                "index": self.clean["idx"].numpy().astype(np.int64), "label": self.labels.numpy().astype(np.int64),
                "clean_correct": clean_correct.numpy().astype(bool),
                "robust_correct": robust_correct.numpy().astype(bool),
                "clean_tau": tau_clean.numpy().astype(np.float32), "adv_tau": tau_adv.numpy().astype(np.float32),
                **sidecar_extra})
        self.written.append(path)
        self.summary.append(rec)

    @staticmethod
    def _write_pair(path: Path, rec: dict, config_key: str, arrays: dict) -> None:
        side_sha = write_npz(path.with_suffix(".npz"), arrays)  # the sidecar first: a record names a whole one
        rec.update(seal_record(json_plain(rec), config_key, side_sha))
        write_json(path, rec)

    def check_space(self) -> None:
        """Refuse up front when this dataset's cache clearly does not fit (and announce a large one)."""
        cfg = self.cfg
        if not self.dist.is_main or len(self.indices) == 0:
            return
        n_adv = sum(a != "none" for a in cfg.attacks) * len(cfg.eps)
        n_ada = len(cfg.defenses) * len(cfg.eps) * 3 if cfg.threat_model != "oblivious" else 0
        est = estimate_bytes(len(self.indices), self.batch(0, 1)[0][0].numel(), cfg.batch_size, n_adv,
                             1 + (n_adv + 1) * len(cfg.defenses) + n_ada, (n_adv + 1) * len(cfg.defenses) + n_ada)
        check_space(self.dstate, est, self.log)

    def sanity_for(self, aname, eps, attack, dname, defense, threat, robust_acc, n, adaptive) -> dict:
        from .probes import Probes

        if not hasattr(self, "_probes") or self._probes.data is not self.data:
            self._probes = Probes(self)
        return self._probes.checks(aname, eps, attack, dname, defense, threat, robust_acc, n, adaptive)

    def print_summary(self, seconds: float) -> None:
        if not self.summary:
            self.log("nothing to evaluate")
            return
        self.log(f"\n{'dataset':<14} {'attack':<16} {'eps':<7} {'defense':<15} {'threat':<10} "
                 f"{'clean':>7} {'robust':>7}  sanity")
        for r in self.summary:
            a = r["adaptive_attack"]["name"] if r.get("adaptive_attack") else r["attack"]["name"]
            flags = [k for k, v in r["sanity"].items() if v["passed"] is False]
            notes = [k for k, v in r["sanity"].items() if v.get("fired")]
            m = r["metrics"]
            draws = (f"  all {m['eval_draws']} draws {m['robust_acc_all_draws']:.4f}"
                     if m.get("eval_draws", 1) > 1 else "")
            status = ("FLAGGED: " + ", ".join(flags) if flags else "ok") + ("; " + ", ".join(notes) if notes else "")
            self.log(f"{r['dataset']:<14} {a:<16} {r['attack']['eps_str']:<7} {r['defense']['name']:<15} "
                     f"{r['threat_model']:<10} {m['clean_acc']:>7.4f} {m['robust_acc']:>7.4f}  {status}{draws}")
        self.log(f"{len(self.summary)} records in {self.out} ({seconds:.0f} s); "
                 f"`counterclip report {self.out}` builds the tables and figures")


def module_fingerprint(module) -> str:
    """sha256 over a module's state dict (a model passed as an object has no weight files to hash)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def path_name(name: str) -> str:
    """A grid name as a file-name part: built-in words unchanged, ``pkg.mod:Class`` -> ``pkg.mod-Class``."""
    return name.replace(":", "-").replace("/", "-")


def weights_fingerprint(model: str, pretrained) -> str | None:
    """sha256 of the weight files behind a model name that are on disk (embedded weights, ``local-dir:`` and
    ``hf:`` folders, a ``--pretrained`` file), so retrained or replaced weights never reuse cached results.
    Hub tags and ids name immutable releases and are keyed by name."""
    from ..models.registry import EMBEDDED, embedded_dir

    files: list[Path] = []
    if model in EMBEDDED:
        files = sorted(embedded_dir(model).glob("*.safetensors"))
    elif model.startswith(("local-dir:", "hf:")):
        folder = Path(model.split(":", 1)[1])
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    if pretrained and Path(str(pretrained)).is_file():
        files.append(Path(pretrained))
    if not files:
        return None
    return stable_hash([file_sha256(f) for f in files], 32)
