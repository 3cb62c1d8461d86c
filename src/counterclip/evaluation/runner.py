"""``counterclip eval``: datasets x attacks x budgets x defenses x threat models, resumable and shardable.

Protocol (the paper's defense-oblivious one, spec section 3, plus adaptive attacks): adversarial examples are
made once per attack configuration against the undefended classifier, cached under ``DIR/.state/``, and reused
by every defense; adaptive attacks target each defense itself. Every random draw (attack start, TTC's delta0,
EOT) derives from (seed, dataset, sample index), and ``--limit`` picks samples before sharding, so numbers do
not depend on batch size, process count or a resume. Work is saved atomically after every batch.

For each dataset: prepare a ``DatasetContext``, plan its cells (``plan.py``), execute each (``execute.py``)
into a ``CellResult``, and write its record (``record.py``) under the keys of ``keys.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..budgets import parse_eps
from ..defenses import TTC, Defended
from ..defenses.base import for_dataset
from . import execute, factory, keys, validate
from .config import EvalConfig
from .context import DatasetContext
from .distributed import Dist
from .plan import Cell, Through, plan_dataset
from .record import SUMMARY_HEADER, build_record, sidecar_arrays, summary_line, write_pair
from .sampling import select_indices
from .signals import Preempted, graceful_stop, stop_requested
from .space import check_space, estimate_bytes
from .chunks import saved_work
from .state import read_finished


@dataclass
class History:
    """What the run has measured so far, for the sanity checks that compare records."""

    obliv: dict = field(default_factory=dict)  # (attack, eps, defense) -> robust correct
    summary: list = field(default_factory=list)  # records of this run, in order


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
        given = cfg.objects.get("__model__")  # counterclip.evaluate(model=<ClipModel>)
        self.model = given.to(self.device) if given is not None else load_model(
            cfg.model, cfg.pretrained, device=self.device, vision_checkpoint=cfg.vision_checkpoint)
        self.model_id = keys.model_identity(cfg, self.model, given)
        self.store = execute.ChunkStore(self.dist, cfg.overwrite)
        self.history = History()
        self.written: list[Path] = []
        self.failures: list[str] = []  # cells whose outputs failed their checks (validate.py): no record

    @property
    def tau_encoder(self):
        # robust finetuned towers: tau from the original CLIP encoder (spec section 2)
        return self.model.encode_image_base if self.model.base_visual is not None else None

    @property
    def summary(self) -> list:
        return self.history.summary

    def attack_for(self, name: str, eps: float):
        return factory.attack_for(self.cfg, name, eps)

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

    def context(self, name: str) -> DatasetContext:
        from ..data import get_dataset
        from ..zeroshot import ZeroShotClassifier

        cfg = self.cfg
        image_size = cfg.image_size or self.model.image_size
        data = get_dataset(name, data_root=cfg.data_root, download=cfg.download, image_size=image_size,
                           resize=cfg.resize, prompts=cfg.prompts, allow_partial=cfg.allow_partial)
        indices = select_indices(len(data), cfg.limit, cfg.seed)
        start, end = self.dist.shard(len(indices))
        ctx = DatasetContext(cfg=cfg, data=data, clf=None, indices=indices, start=start, end=end,
                             device=self.device, state=self.out / ".state" / data.name,
                             base_key=keys.base_key(self.model_id, data, image_size, indices, cfg.seed, __version__,
                                                    cfg.precision),
                             dist=self.dist, image_size=image_size, tau_encoder=self.tau_encoder)
        with ctx.autocast():  # fp16-all: the class text is encoded under autocast too, as the reference does
            ctx.clf = ZeroShotClassifier(self.model, data.classnames, data.templates)
        return ctx

    def run_dataset(self, name: str) -> None:
        cfg = self.cfg
        ctx = self.context(name)
        self.check_space(ctx)
        calibrate = lambda gate: factory.calibrate(cfg, ctx.data, ctx.indices, ctx.image_size,  # noqa: E731
                                                   self.model.encode_image, self.device, gate)
        defenses = {d: for_dataset(factory.defense_for(cfg, d, self.tau_encoder, calibrate), ctx.name)
                    for d in cfg.defenses}
        keys.finish_base_key(ctx.base_key, cfg.quantize, parse_eps(cfg.ttc_eps), self.tau_encoder is not None)
        ctx.tau_ttc = TTC(eps=cfg.ttc_eps, tau_thres=float("inf"), tau_encoder=self.tau_encoder)
        ctx.clean = execute.clean_cell(ctx, self.store, keys.clean_folder(ctx.state, ctx.base_key))
        clean = {}
        for d in defenses:
            with validate.contained(self.failures, self.log):  # a failed defense gets no other cell either
                clean[d] = execute.defense_cell(ctx, self.store, self._def_folder(ctx, d, defenses[d], "clean"), d,
                                                defenses[d])
        defenses = {d: v for d, v in defenses.items() if d in clean}
        self.probes = None
        self.pgd_points: dict = {}  # eps -> (folder, attack) of the oblivious PGD, which gate attacks extend
        plan = plan_dataset(cfg, defenses, ctx.clf.num_classes)
        for a, why in plan.skipped:
            self.log(f"{ctx.name}: {a} skipped ({why})")
        for cell in plan.cells:
            if any(d not in defenses for d in cell.defenses):  # its defense failed on clean inputs
                cell = Cell(cell.attack, cell.eps, cell.threat, tuple(d for d in cell.defenses if d in defenses),
                            cell.mode, cell.extends)
                if not cell.defenses:
                    continue
            with validate.contained(self.failures, self.log):  # a failed cell writes no record; the rest go on
                if cell.attack == "none":
                    for d in cell.defenses:
                        if self.finished(ctx, cell, "none", None, d, defenses[d]) is None:
                            self.record(ctx, cell, "none", None, d, defenses[d], clean[d], clean[d])
                elif cell.threat == "oblivious":
                    self.oblivious(ctx, cell, defenses, clean)
                else:
                    self.adaptive(ctx, cell, defenses[cell.defenses[0]], clean[cell.defenses[0]])

    def _def_folder(self, ctx, dname, defense, inputs: str) -> Path:
        return keys.defense_folder(ctx.state, ctx.base_key, dname, defense.params(), inputs, self.cfg.eval_draws)

    def oblivious(self, ctx, cell: Cell, defenses: dict, clean: dict) -> None:
        attack = factory.attack_for(self.cfg, cell.attack, cell.eps)
        folder = keys.adv_folder(ctx.state, ctx.base_key, cell.attack, attack)
        if cell.attack == "pgd":
            self.pgd_points[cell.eps] = (folder, attack)
        todo = []
        for d in cell.defenses:
            done = self.finished(ctx, cell, cell.attack, attack, d, defenses[d])
            if done is None:
                todo.append(d)
            else:
                self.history.obliv[(cell.attack, cell.eps, d)] = done
        if not todo:
            return
        adv, attack_time = execute.oblivious_cell(ctx, self.store, folder, attack)
        for d in todo:
            with validate.contained(self.failures, self.log):
                res = execute.defense_cell(ctx, self.store, self._def_folder(ctx, d, defenses[d], folder.name), d,
                                           defenses[d], adv=(folder, attack))
                res.elapsed += clean[d].elapsed
                res.tau_adv, res.broken_by = adv["tau_adv"], adv.get("broken_by")
                self.history.obliv[(cell.attack, cell.eps, d)] = res.correct
                self.record(ctx, cell, cell.attack, attack, d, defenses[d], clean[d], res,
                            attack_time_s=attack_time)

    def adaptive(self, ctx, cell: Cell, defense, clean) -> None:
        cfg, dname = self.cfg, cell.defenses[0]
        if cell.mode is not None:  # a composed attack through the defense's gradient mode
            attack = factory.composed_through(cfg, cell.attack, cell.eps, defense)
            recorded, target = Through(attack, cell.mode), Defended(defense, ctx.clf, differentiable=cell.mode)
            stream = f"adaptive:{{name}}-{cell.mode}:{dname}:{{eps}}"
        else:
            attack = recorded = factory.adaptive_for(cfg, cell.attack, cell.eps, defense)
            target, stream = Defended(defense, ctx.clf), f"adaptive:{cell.attack}:{dname}:{cell.eps}"
        init = self.pgd_points.get(cell.eps) if cell.extends else None
        x_init = init[1] if init else None
        if self.finished(ctx, cell, recorded.name, recorded, dname, defense, x_init) is not None:
            return
        folder = keys.adaptive_folder(ctx.state, ctx.base_key, recorded.name, cell.eps, dname, recorded.config(),
                                      defense.params(), init[0] if init else None, cfg.eval_draws)
        if init is not None:  # its chunks may be gone (a deleted .state): loads them, or remakes them
            execute.oblivious_cell(ctx, self.store, init[0], init[1])
        res = execute.adaptive_cell(ctx, self.store, folder, recorded.name, attack, target, dname, defense, stream,
                                    init)
        self.record(ctx, cell, recorded.name, recorded, dname, defense, clean, res, x_init=x_init)

    # -- records ---------------------------------------------------------------------------------------------
    def record_path(self, ctx, cell, label, attack, dname, defense, x_init=None) -> tuple[Path, str]:
        adaptive = attack.config() if cell.threat == "adaptive" else None
        return keys.record_key(self.out, ctx.name, ctx.base_key, label, cell.eps, attack, dname, defense.params(),
                               cell.threat, adaptive, x_init.config() if x_init is not None else None,
                               self.cfg.limit, self.cfg.eval_draws)

    def finished(self, ctx, cell, label, attack, dname, defense, x_init=None):
        """A finished cell's per-sample robust correctness (its record and sidecar exist), else None. Finished
        cells are never recomputed unless --overwrite."""
        if self.cfg.overwrite:
            return None
        path, config_key = self.record_path(ctx, cell, label, attack, dname, defense, x_init)
        found = read_finished(path, config_key)
        if found is None or "robust_correct" not in found[1] or not validate.reusable(found[0], self.cfg.on_invalid):
            return None
        if self.dist.is_main:
            self.history.summary.append(found[0])
            self.written.append(path)
        return torch.from_numpy(found[1]["robust_correct"].astype(bool))

    def record(self, ctx, cell, label, attack, dname, defense, clean, result, x_init=None,
               attack_time_s=None) -> None:
        if not self.dist.is_main:
            return
        tau_adv = ctx.clean["tau"] if result.tau_adv is None else result.tau_adv  # clean record: clean inputs
        invalid = clean.invalid if result is clean else invalid_of(clean.invalid, result.invalid)
        rec = build_record(ctx, self, label, cell.eps, cell.threat, attack, dname, defense, clean, result, x_init,
                           lambda r: self.sanity_for(ctx, cell, label, attack, dname, defense, r), attack_time_s,
                           invalid)
        path, config_key = self.record_path(ctx, cell, label, attack, dname, defense, x_init)
        write_pair(path, rec, config_key, sidecar_arrays(ctx, clean, result, tau_adv, attack))
        self.written.append(path)
        self.history.summary.append(rec)

    def sanity_for(self, ctx, cell, label, attack, dname, defense, rec) -> dict:
        from .probes import Probes

        if self.probes is None or self.probes.ctx is not ctx:
            self.probes = Probes(ctx, lambda name, eps: factory.attack_for(self.cfg, name, eps), self.history)
        m = rec["metrics"]
        return self.probes.checks(label, cell.eps, attack, dname, defense, cell.threat, m["robust_acc"],
                                  m["n_samples"], attack if cell.threat == "adaptive" else None,
                                  rec.get("autoattack"))

    def check_space(self, ctx) -> None:
        """Refuse up front when this dataset's cache clearly does not fit (and announce a large one)."""
        cfg = self.cfg
        if not self.dist.is_main or len(ctx.indices) == 0:
            return
        n_adv = sum(a != "none" for a in cfg.attacks) * len(cfg.eps)
        n_ada = len(cfg.defenses) * len(cfg.eps) * 3 if cfg.threat_model != "oblivious" else 0
        est = estimate_bytes(len(ctx.indices), ctx.batch(0, 1)[0][0].numel(), cfg.batch_size, n_adv,
                             1 + (n_adv + 1) * len(cfg.defenses) + n_ada, (n_adv + 1) * len(cfg.defenses) + n_ada)
        check_space(ctx.state, est, self.log)

    def print_summary(self, seconds: float) -> None:
        if self.failures:
            self.log(f"\n{len(self.failures)} cell(s) FAILED their output checks and have no record:")
            for f in self.failures:
                self.log(f"  {f}")
        if not self.summary:
            self.log("nothing to evaluate" if not self.failures else "no record written")
            return
        self.log(SUMMARY_HEADER)
        for r in self.summary:
            self.log(summary_line(r))
        self.log(f"{len(self.summary)} records in {self.out} ({seconds:.0f} s); "
                 f"`counterclip report {self.out}` builds the tables and figures")


def invalid_of(clean_codes, robust_codes):
    """A record's per-sample failed-check codes: its clean cell's and its attacked cell's."""
    if clean_codes is None or robust_codes is None:
        return clean_codes if robust_codes is None else robust_codes
    return clean_codes | robust_codes
