"""Executing cells: chunks of this rank's shard, computed once and saved atomically (``chunks.run_chunks``),
then gathered over ranks. One attack contract: ``attack(target, x, y, generator=..., x_init=...)`` with
``target`` the undefended classifier (oblivious) or a ``Defended`` (adaptive), so both threat models run through
``attack_inputs``; ``defend`` classifies whatever inputs a cell has, and returns a ``CellResult`` value.

How a cell is stored is kept as the cache keys (``keys.py``) name it: an oblivious attack's perturbations in
one folder that every defense's predictions read; an adaptive cell's attack and predictions in one folder.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import ball
from ..budgets import eps_str
from ..progress import per_chunk
from . import composite, validate
from .chunks import chunk_path, run_chunks
from .describe import gate_pass, run_counted
from .quantize import serialise
from .state import require_tensors


@dataclass
class CellResult:
    """Per sample over the whole selection (every rank's shard): what a record is made of."""

    correct: torch.Tensor
    tau_adv: torch.Tensor | None = None
    cost: torch.Tensor | None = None  # summed run_counted rows
    gate: torch.Tensor | None = None  # gate lets the input through, per sample
    draws: torch.Tensor | None = None  # --eval-draws: [N, R] correctness
    broken_by: torch.Tensor | None = None  # composed attacks: the breaking component per sample
    invalid: torch.Tensor | None = None  # per-sample codes of failed output checks (validate.py)
    elapsed: float = 0.0  # seconds this run spent on it (0 when every chunk was saved already)


class ChunkStore:
    """Runs a cell's chunks; with ``overwrite``, each cell folder is cleared once per run before its first use."""

    def __init__(self, dist, overwrite: bool):
        self.dist, self.overwrite = dist, overwrite
        self._fresh: set[Path] = set()

    def run(self, ctx, folder: Path, compute, desc: str, gather_keys: tuple, method=None) -> tuple[dict, float]:
        """``compute(start, end)`` for this rank's chunks (saved ones are read back), gathered over ranks.
        ``method`` names whose outputs the cell checks (a name, or {"attack": .., "defense": ..}) in a failure's
        line; a failure on any rank fails the cell on every rank (``validate.InvalidOutput``)."""
        if self.overwrite and folder not in self._fresh:
            if self.dist.is_main and folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            self.dist.barrier()  # no rank writes a chunk before rank 0 has cleared the folder
        self._fresh.add(folder)
        t0 = time.time()
        bar = tqdm(total=ctx.end - ctx.start, desc=desc, unit="img", leave=False, disable=not self.dist.is_main)

        def compute_under_precision(cs, ce):
            with ctx.autocast():
                return compute(cs, ce)

        failure = None
        try:
            done = run_chunks(folder, ctx.ranges(), *per_chunk(compute_under_precision, bar))  # bar moves per step
        except validate.InvalidOutput as e:  # every rank still gathers below: a peer's failure must not hang it
            done, failure = [], e
        parts = [{k: res[k] for k in gather_keys if k in res} for res in done]  # old chunks may lack a newer key
        if "invalid" in gather_keys:  # a chunk saved before outputs were checked is marked unchecked
            parts = [{**p, "invalid": validate.codes_of(p, ce - cs)} for p, (cs, ce) in zip(parts, ctx.ranges())]
        bar.close()
        keys = [k for k in gather_keys if all(k in p for p in parts)]
        local = {k: torch.cat([p[k] for p in parts]) if parts else torch.empty(0) for k in keys}
        merged = self.dist.gather({**local, "failure": failure})
        validate.first_failure([m.pop("failure") for m in merged])
        out = {k: torch.cat([m[k] for m in merged]) for k in keys if all(k in m for m in merged)}
        validate.settle(out.get("invalid"), ctx.cfg.on_invalid, method, ctx.indices, ctx.name)
        return out, time.time() - t0


def reproject(x, delta, eps):
    """Every reader turns a stored fp16 perturbation back into the same input."""
    return ball.apply_delta(x, delta.to(x.device, x.dtype), eps)


def saved_point(ctx, folder: Path, attack, x, cs: int, ce: int, check=None):
    """The adversarial input an oblivious cell saved for chunk ``cs:ce`` (``check`` carries its invalid
    samples, which stay counted wrong under --on-invalid skip)."""
    chunk = require_tensors(chunk_path(folder, cs, ce))
    if check is not None:
        check.carry(chunk)
    return reproject(x, chunk["delta"], attack.eps)


def checker(ctx, idx) -> validate.BatchCheck:
    """The output checks of one batch (validate.py)."""
    return validate.BatchCheck(ctx.cfg.on_invalid, idx, ctx.clf.num_classes, ctx.name)


def attack_inputs(ctx, attack, target, x, y, gens, check, method, x_init=None):
    """The attack's output, checked as it returned it, then as every reader will see it: fp16 perturbation,
    re-projected."""
    kw = {"x_init": x_init} if x_init is not None else {}
    x_adv = attack(target, x, y, generator=gens, **kw)
    x_adv = check.adversarial(method, x, x_adv, attack.eps, getattr(attack, "norm", "linf"))
    delta = (x_adv - x).half()  # stored as fp16 perturbation; every reader re-projects it the same way
    return delta, reproject(x, delta, attack.eps)


def tau_of(ctx, x, idx) -> torch.Tensor:
    with torch.no_grad():
        return ctx.tau_ttc.tau_of(ctx.clf.encode_image, x, generator=ctx.gens(idx, "tau")).float().cpu()


def defend(ctx, dname, defense, x, y, idx, check) -> dict:
    """One chunk's predictions by ``defense``: correctness, counted cost, gate decisions, re-drawn copies; every
    logit and gate score checked as it comes out."""
    logits, cost = run_counted(defense, ctx.clf, x, ctx.gens(idx, f"defense:{dname}"))
    check.logits(dname, logits)
    out = {"correct": check.correct(logits, y), "cost": cost}
    if ctx.cfg.eval_draws > 1:
        out["draws"] = composite.eval_draws(ctx, defense, dname, x, y, idx, logits, check)
    gp = gate_pass(defense, ctx.clf, x, ctx.gens(idx, f"gate:{dname}"), lambda s: check.gate(dname, s))
    return out if gp is None else {**out, "gate_pass": gp}


def _draw_keys(ctx) -> tuple:
    return ("draws",) if ctx.cfg.eval_draws > 1 else ()


def clean_cell(ctx, store: ChunkStore, folder: Path) -> dict:
    def compute(cs, ce):
        x, y, idx = ctx.batch(cs, ce)
        return {"y": y.cpu(), "idx": idx, "tau": tau_of(ctx, x, idx)}

    with torch.no_grad():
        return store.run(ctx, folder, compute, f"{ctx.name} clean", ("y", "idx", "tau"))[0]


def oblivious_cell(ctx, store: ChunkStore, folder: Path, attack) -> tuple[dict, float]:
    """The attack on the undefended classifier: saved perturbations and their tau (and breaking stages)."""
    composed = composite.is_composite(attack)
    method = validate.method_of(attack, "attack")

    def compute(cs, ce):
        x, y, idx = ctx.batch(cs, ce)
        chk = checker(ctx, idx)
        gens = composite.attack_generators(ctx, attack, idx, "attack:{name}:{eps}")
        delta, x_adv = attack_inputs(ctx, attack, ctx.clf, x, y, gens, chk, method)
        out = {"delta": delta.cpu(), "tau_adv": tau_of(ctx, x_adv, idx)}
        if composed:
            out["broken_by"] = attack.last_broken_by.cpu()
        return chk.finish(out)

    keys = ("tau_adv", "invalid") + (("broken_by",) if composed else ())
    return store.run(ctx, folder, compute, f"{ctx.name} {attack.name} {eps_str(attack.eps)}", keys, method)


def defense_cell(ctx, store: ChunkStore, folder: Path, dname, defense, adv=None) -> CellResult:
    """``defense`` on the clean inputs, or on an oblivious cell's saved ones (``adv``: (folder, attack))."""

    def compute(cs, ce):
        x, y, idx = ctx.batch(cs, ce)
        chk = checker(ctx, idx)
        if adv is not None:
            x = serialise(x, saved_point(ctx, adv[0], adv[1], x, cs, ce, chk), adv[1].eps, ctx.cfg.quantize)
        return chk.finish(defend(ctx, dname, defense, x, y, idx, chk))

    label = "clean" if adv is None else f"{adv[1].name} {eps_str(adv[1].eps)}"
    res, dt = store.run(ctx, folder, compute, f"{ctx.name} {dname} on {label}",
                        ("correct", "cost", "gate_pass", "invalid") + _draw_keys(ctx), dname)
    return CellResult(res["correct"], cost=res.get("cost"), gate=res.get("gate_pass"), draws=res.get("draws"),
                      invalid=res.get("invalid"), elapsed=dt)


def adaptive_cell(ctx, store: ChunkStore, folder: Path, label: str, attack, target, dname, defense, stream: str,
                  init=None) -> CellResult:
    """An attack through ``target`` (a ``Defended``), then the defense's predictions on its output, stored
    together. ``init``: (folder, attack) of the oblivious point a gate attack extends."""
    composed = composite.is_composite(attack)

    def compute(cs, ce):
        x, y, idx = ctx.batch(cs, ce)
        chk = checker(ctx, idx)
        x_init = saved_point(ctx, init[0], init[1], x, cs, ce) if init is not None else None
        gens = composite.attack_generators(ctx, attack, idx, stream)
        _, x_adv = attack_inputs(ctx, attack, target, x, y, gens, chk, label, x_init)
        x_adv = serialise(x, x_adv, attack.eps, ctx.cfg.quantize)
        with torch.no_grad():
            out = defend(ctx, dname, defense, x_adv, y, idx, chk)
        out["tau_adv"] = tau_of(ctx, x_adv, idx)
        if composed:
            out["broken_by"] = attack.last_broken_by.cpu()
        return chk.finish(out)

    keys = ("correct", "tau_adv", "cost", "gate_pass", "invalid") + _draw_keys(ctx) + \
        (("broken_by",) if composed else ())
    with torch.enable_grad():
        res, dt = store.run(ctx, folder, compute, f"{ctx.name} {label} -> {dname} {eps_str(attack.eps)}", keys,
                            {"attack": label, "defense": dname})
    return CellResult(res["correct"], tau_adv=res["tau_adv"], cost=res.get("cost"), gate=res.get("gate_pass"),
                      draws=res.get("draws"), broken_by=res.get("broken_by"), invalid=res.get("invalid"),
                      elapsed=dt)
