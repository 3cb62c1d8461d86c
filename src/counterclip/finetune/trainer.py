"""The fine-tuning loop (spec sections 1 and 6): one process or torchrun ranks, resumable, with a record.

The trainer owns a deep copy of ``model.visual`` (``ClipModel`` is a frozen evaluator and refuses train mode);
``model.visual`` itself stays the frozen original ``f_0``. Text embeddings are encoded once. Only the trainable
copy is wrapped in DDP; the attack runs on the unwrapped copy and takes gradients with respect to the
perturbation only, so the training forward is the one DDP forward per step.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import CounterclipError
from ..evaluation.distributed import Dist
from ..models.clip_model import IMAGENET_MEAN, IMAGENET_STD
from ..evaluation.signals import Preempted, check_stop, graceful_stop
from . import checkpoint as ckpt
from . import data as fdata
from .attack import pgd_train, start_generators
from .config import METHOD_OPTIONS, resume_key
from .heldout import evaluate_heldout
from .methods import build_method, resolve_method
from .schedule import lr_at, set_lr, warmup_steps



class Context:
    """What a method sees: ``embed(tower, x) = tower(P(x))`` in fp32 and the zero-shot ``logits``."""

    def __init__(self, model, text: torch.Tensor, scale: float, normalisation: str, world: int):
        self.model, self.text, self.scale, self.world = model, text, float(scale), world
        self.f0 = model.visual
        self.normalisation = normalisation
        if normalisation == "imagenet":  # P with ImageNet statistics: re-normalise the model's own P(x)
            dev = model.device
            m_in, s_in = (torch.tensor(v, device=dev).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
            self._affine = (model.std / s_in, (model.mean - m_in) / s_in)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        p = self.model.preprocess(x)
        if self.normalisation == "imagenet":
            p = p * self._affine[0] + self._affine[1]
        return p

    def embed(self, tower, x: torch.Tensor) -> torch.Tensor:
        return tower(self.preprocess(x)).float()

    def logits(self, e: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        return (self.scale if scale is None else scale) * F.normalize(e.float(), dim=-1) @ self.text.t()


def build_optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    """The run's optimiser over ``params``: SGD with momentum 0.9 (not Nesterov) or AdamW with betas (0.9, 0.999),
    at the run's lr and weight decay (spec sections 2-4)."""
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=0.9, weight_decay=cfg["weight_decay"])
    return torch.optim.AdamW(params, lr=cfg["lr"], betas=(0.9, 0.999), weight_decay=cfg["weight_decay"])


class Trainer:
    def __init__(self, cfg: dict, log=print):
        self.cfg, self.log = cfg, log
        self.out = Path(cfg["output"])
        if cfg["threads"]:
            torch.set_num_threads(cfg["threads"])
        self.dist = Dist(cfg["device"])
        self.device = self.dist.device
        if cfg["batch_size"] % self.dist.world:
            raise CounterclipError(f"--batch-size {cfg['batch_size']} (the global batch) does not divide over "
                                   f"{self.dist.world} ranks; use a multiple of {self.dist.world}")
        self.method = build_method(cfg["method"], reference=cfg["reference"],
                                   **{k: cfg[k] for k in METHOD_OPTIONS if cfg[k] is not None})
        self._build()

    # -- set-up ---------------------------------------------------------------------------------------------
    def _build(self) -> None:
        from ..data import get_dataset
        from ..data.prompts import refine_classname
        from ..models import load_model
        from ..zeroshot import ZeroShotClassifier

        cfg = self.cfg
        self.model = load_model(cfg["model"], cfg["pretrained"], device=self.device,
                                vision_checkpoint=cfg["vision_checkpoint"])
        self.loaded = get_dataset(cfg["dataset"], split="train", data_root=cfg["data_root"],
                                  download=cfg["download"], image_size=cfg["image_size"] or self.model.image_size,
                                  resize=cfg["resize"], prompts=cfg["prompts"], interpolation=cfg["interpolation"])
        self.classes = fdata.parse_classes(cfg["classes"], len(self.loaded.classnames))
        self.class_map = {c: i for i, c in enumerate(self.classes)}
        labels = fdata.labels_of(self.loaded.dataset)
        listed, self.heldout_rule = self._heldout_list()
        self.train_idx, self.held_idx = fdata.split(labels, self.classes, cfg["seed"], cfg["limit"], listed=listed)
        self.steps_per_epoch = len(self.train_idx) // cfg["batch_size"]
        if self.steps_per_epoch == 0:
            raise CounterclipError(f"{len(self.train_idx)} training images give no full batch of "
                                   f"{cfg['batch_size']}; lower --batch-size or raise --limit")
        self.total = cfg["max_steps"] or cfg["epochs"] * self.steps_per_epoch
        self.warmup = warmup_steps(cfg["warmup"], self.total)
        self.classnames = [self.loaded.classnames[c] for c in self.classes]
        if cfg["refine_names"]:  # the TeCoA/PMG-AFT/RobustVLM codes' class-name form (finetune.md section 1)
            self.classnames = [refine_classname(n) for n in self.classnames]
        template = cfg["template"] or self.loaded.templates[0]
        self.template = template
        text = ZeroShotClassifier(self.model, self.classnames, [template]).text_embeddings.float()
        scale = 1.0 if self.method.logit_scale_one else self.model.logit_scale
        self.ctx = Context(self.model, text.to(self.device), scale, self.method.normalisation, self.dist.world)

        self.tower = copy.deepcopy(self.model.visual).float()
        self.tower.requires_grad_(False)
        params = list(self.tower.parameters())
        trained = params[-cfg["last_n_params"]:] if cfg["last_n_params"] else params
        for p in trained:
            p.requires_grad_(True)
        self.params = trained
        self.opt = build_optimizer(cfg, trained)
        self.forward = self.tower
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [torch.device(self.device).index] if str(self.device).startswith("cuda") else None
            self.forward = DDP(self.tower, device_ids=ids, find_unused_parameters=False)
        cuda = str(self.device).startswith("cuda")
        self.fp16 = bool(cuda and self.method.attack_options().get("fp16"))  # the reference codes' mode
        self.scaler = torch.amp.GradScaler("cuda") if self.fp16 else None
        fp32_reference = cfg["reference"] and self.method.name == "fare"  # FARE's reference is fp32 throughout
        self.train_dtype = torch.float16 if self.fp16 else (torch.bfloat16 if cuda and not fp32_reference else None)
        self.key = resume_key(cfg)

    def _heldout_list(self):
        """The packaged held-out file list of the training data (Tiny ImageNet: TTC's ``eval_files``) as a
        per-sample mask, and the rule the record states; ``None`` (seeded 10 % per class) where there is none."""
        from ..data.heldout import heldout_files, heldout_source

        name = self.loaded.name
        files = heldout_files(name, "train")
        if files is None:
            return None, f"seeded {fdata.HELDOUT_FRACTION:.0%} per class"
        mask = fdata.listed_mask(self.loaded.dataset, files, f"dataset {name} (held-out list {heldout_source(name)})")
        return mask, f"listed: {heldout_source(name)}"

    def _autocast(self, dtype):
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=dtype)

    # -- state ----------------------------------------------------------------------------------------------
    def _fresh_state(self) -> dict:
        return {"step": 0, "history": [], "best": None, "train_seconds": 0.0, "images": 0}

    def _load_resume(self) -> dict:
        path = self.out / ckpt.RESUME_FILE
        if not path.is_file() or self.cfg["overwrite"]:
            return self._fresh_state()
        saved = torch.load(str(path), map_location="cpu", weights_only=True)
        if saved.get("key") != self.key:
            raise CounterclipError(f"{self.out} holds a fine-tuning run with other settings (its resume state "
                                   f"{path}); pass --overwrite to start over, or another --output")
        self.tower.load_state_dict(saved["tower"])
        self.opt.load_state_dict(saved["optimizer"])
        if self.scaler is not None and "scaler" in saved:
            self.scaler.load_state_dict(saved["scaler"])
        state = saved["state"]
        if state.get("best") is not None:
            state["best"]["tower"] = saved.get("best_tower")
        self.log(f"resuming {self.out} at step {state['step']}/{self.total}")
        return state

    def _save_resume(self, state: dict) -> None:
        if not self.dist.is_main:
            return
        best = state.get("best")
        saved = {"key": self.key, "tower": ckpt.cpu_state(self.tower.state_dict()),
                 "optimizer": ckpt.to_cpu(self.opt.state_dict()),
                 "state": ckpt.primitives({k: v for k, v in state.items() if k != "best"}
                                          | {"best": {k: v for k, v in best.items() if k != "tower"}
                                             if best else None}),
                 "best_tower": best["tower"] if best else None}
        if self.scaler is not None:
            saved["scaler"] = self.scaler.state_dict()
        ckpt.save_torch(saved, self.out / ckpt.RESUME_FILE)

    # -- one step -------------------------------------------------------------------------------------------
    def _step(self, step: int, idx: torch.Tensor) -> dict:
        cfg, m = self.cfg, self.method
        epoch = step // self.steps_per_epoch
        x, y = fdata.load_batch(self.loaded.dataset, idx, self.class_map)
        x, y = x.to(self.device), y.to(self.device)
        set_lr(self.opt, lr_at(step, cfg["lr"], self.warmup, self.total,
                               reference_fare=cfg["reference"] and m.name == "fare"))
        opts = m.attack_options()
        self.opt.zero_grad(set_to_none=True)
        self.tower.eval()  # ViTs have no dropout or BatchNorm: numerically the same, as the spec says
        state = m.batch_state(self.ctx, self.tower, x, y)
        with self._autocast(torch.float16 if self.fp16 else None):
            x_adv = pgd_train(lambda xa: m.attack_loss(self.ctx, self.tower, xa, x, y, state), x,
                              eps=cfg["eps"], steps=cfg["steps"], step_size=cfg["step_size"],
                              momentum=cfg["momentum"], clip_start=opts["clip_start"],
                              generator=start_generators(cfg["seed"], cfg["dataset"], epoch, idx),
                              reduction=opts["reduction"], leak_params=self.params if opts["leak"] else ())
        self.tower.train()
        with self._autocast(self.train_dtype):
            loss, parts = m.train_loss(self.ctx, self.forward, x_adv, x, y, state)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        self.tower.eval()
        return {"loss": loss.item(), **parts}

    # -- the run --------------------------------------------------------------------------------------------
    def _epoch_end(self, state: dict) -> None:
        """Held-out evaluation of the weights after an epoch (rank 0; the others wait at the barrier)."""
        epoch = math.ceil(state["step"] / self.steps_per_epoch)
        if any(h["epoch"] == epoch for h in state["history"]):
            return
        entry = {"epoch": epoch, "step": state["step"],
                 "images_per_s": state["images"] / max(state["train_seconds"], 1e-9)}
        if self.dist.is_main and self.cfg["eval_limit"]:
            entry.update(evaluate_heldout(self, self.held_idx))
            self.log(f"epoch {epoch}: held-out clean {entry['heldout_clean_acc']:.4f}, robust "
                     f"{entry['heldout_robust_acc']:.4f} at {entry['heldout_eps_str']} "
                     f"({entry['heldout_n']} images), {entry['images_per_s']:.1f} img/s")
            best = state["best"]
            if self.cfg["select"] == "heldout" and (best is None or entry["heldout_robust_acc"] > best["acc"]):
                state["best"] = {"acc": entry["heldout_robust_acc"], "epoch": epoch, "step": state["step"],
                                 "tower": ckpt.cpu_state(self.tower.state_dict())}
        state["history"].append(entry)

    def run(self) -> dict:
        from tqdm import tqdm

        cfg = self.cfg
        state = self._load_resume()
        if state["step"] and (state["step"] % self.steps_per_epoch == 0 or state["step"] == self.total):
            self._epoch_end(state)  # a run stopped during its epoch-end evaluation
        bar = tqdm(total=self.total, initial=state["step"], desc=f"finetune {self.method.name}", unit="step",
                   disable=not self.dist.is_main, dynamic_ncols=True)
        batches, batches_epoch = None, None
        try:
            with graceful_stop([self.tower, self.model.visual]):
                while state["step"] < self.total:
                    step = state["step"]
                    epoch, j = divmod(step, self.steps_per_epoch)
                    if batches_epoch != epoch:
                        batches = fdata.epoch_batches(self.train_idx, epoch, cfg["seed"], cfg["batch_size"],
                                                      self.dist.rank, self.dist.world)
                        batches_epoch = epoch
                    t0 = time.perf_counter()
                    parts = self._step(step, batches[j])
                    state["train_seconds"] += time.perf_counter() - t0
                    state["images"] += cfg["batch_size"]
                    state["step"] = step + 1
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in parts.items()}
                                    | {"img/s": f"{state['images'] / max(state['train_seconds'], 1e-9):.1f}"})
                    if state["step"] % self.steps_per_epoch == 0 or state["step"] == self.total:
                        self._epoch_end(state)
                    if state["step"] % cfg["save_every"] == 0 or state["step"] == self.total:
                        self._save_resume(state)
                    check_stop()
        except Preempted:
            bar.close()
            self._save_resume(state)  # the weights of the last finished step: nothing half-updated
            raise
        bar.close()
        self.dist.barrier()
        result = self._finish(state) if self.dist.is_main else {}
        self.dist.barrier()
        self.dist.close()
        return result

    def _finish(self, state: dict) -> dict:
        from .record import finish_run

        return finish_run(self, state)


def finetune(output, method: str = "tecoa", preset: str = "toy", log=print, **settings) -> dict:
    """Adversarially fine-tune a CLIP vision tower (TeCoA, PMG-AFT or FARE; ``finetune.md``) and write its
    checkpoint under ``output``; returns the run's record (``finetune.json``). Keyword settings are the CLI's
    options with underscores (``limit=2048``, ``epochs=1``, ``classes="0-4"``, ``lr=1e-4``, ``format="both"``,
    ...); ``None`` keeps the preset's value. Re-running with the same settings resumes."""
    from .config import resolve

    resolve_method(method)
    return Trainer(resolve(output, method, preset, **settings), log=log).run()
