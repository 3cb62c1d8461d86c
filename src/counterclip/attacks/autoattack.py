"""AutoAttack (Croce & Hein, ICML 2020) as a composition: attacks run in order on the samples still correctly
classified, each sample keeping the first adversarial example found (the per-sample worst case).

Versions (``AutoAttack(eps, version=...)``; AutoAttack's own choices for L∞/L2):

* ``standard``: APGD-CE (1 restart), APGD-T (9 target classes), FAB-T (9 target classes), Square (5000 queries);
* ``plus``: APGD-CE and APGD-DLR (5 restarts each), FAB (5 restarts), Square, APGD-T, FAB-T;
* ``rand``: APGD-CE and APGD-DLR with EOT over 20 draws of a randomised model (1 restart);
* ``paper``: the TTC paper's configuration (``aa-paper``): APGD-CE then APGD-DLR, 1 restart.

``steps`` (default 100) is the iteration count of the APGD and FAB parts, ``queries`` Square's budget.
Attacks that need more classes than the task has are dropped, as AutoAttack does (APGD-DLR needs 3, APGD-T 4;
target counts are capped at ``num_classes - 1``), so a binary task runs APGD-CE (and Square/FAB), never aborts.

Seeding. ``generator`` may be a mapping ``{component name: generator}``: the grid passes each component the
per-sample generators the standalone attack of that name gets (stream ``attack:<name>:<eps>``), so a component
run inside AutoAttack makes, on each sample it runs on, exactly the draws it makes alone, and the composed
per-sample result is never above any component's own. A plain generator (or ``None``) is given to every
component; per-sample generators then continue from one component to the next.

After a call, ``last_broken_by`` holds per sample the index (into ``component_names``) of the component that
broke it, ``-1`` where the clean image is already misclassified, ``len(components)`` where none did; and
``last_stages`` the robust accuracy after each stage (AutoAttack's ``robust_accuracy_dict``). Samples no
component fools get the first component's point (its highest-loss iterate), not the clean image.

Against a ``Defended`` module in a differentiable mode (the adaptive threat model: the grid points it at one, as
it points every adaptive attack, ``evaluation/execute.py``) the
white-box components differentiate through the defense, while Square and the judging of success run without
gradients, i.e. on the defense's inference path (what the evaluation classifies), with seeded attacker-side draws; a sample counts as broken when more than
half of ``judge_draws`` draws misclassify it (one draw for a deterministic defense).

Differences from the reference code: it reseeds the global RNG from the wall clock unless given a seed (here
every draw is seeded per sample), and it returns the clean image for samples it does not fool.
"""

from __future__ import annotations

import torch

from .. import progress, rng
from ..errors import UnknownNameError
from ..inputs import entry
from .apgd import APGD, APGDT
from .base import ATTACKS, Attack
from .fab import FAB
from .square import Square

VERSIONS = ("standard", "plus", "rand", "paper")
MIN_CLASSES = {"apgd-dlr": 3, "apgd-t": 4, "fab-t": 2, "fab": 2}
WHITE_BOX = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t")
JUDGE_DRAWS = 20


def version_components(version: str) -> tuple[str, ...]:
    return {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
            "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
            "rand": ("apgd-ce", "apgd-dlr"), "paper": ("apgd-ce", "apgd-dlr")}[version]


def _randomized(classifier) -> bool:
    return bool(getattr(getattr(classifier, "defense", None), "randomized", False))


@ATTACKS.register("aa-paper", fixed={"version": "paper"},
                  summary="AutoAttack as the TTC paper ran it: APGD-CE, then APGD-DLR")
@ATTACKS.register("autoattack",
                  summary="AutoAttack, the per-sample worst case of its components (Croce & Hein, ICML 2020)")
class AutoAttack(Attack):
    name = "autoattack"
    grid_knobs = {"steps": "aa_steps", "version": "aa_version"}  # --steps is PGD's; AutoAttack has its own

    def __init__(self, eps, version: str = "standard", steps: int = 100, queries: int = 5000,
                 n_target_classes: int = 9, eot_iter: int = 20, judge_draws: int = JUDGE_DRAWS, norm: str = "linf",
                 generator=None, dtype=torch.float32, eot_all_versions: bool = False):
        super().__init__(eps, norm, generator, dtype)
        if version not in VERSIONS:
            raise UnknownNameError("AutoAttack version", version, VERSIONS)
        self.version, self.steps, self.queries = version, int(steps), int(queries)
        self.n_target_classes, self.eot_iter, self.judge_draws = int(n_target_classes), int(eot_iter), int(judge_draws)
        # EOT in the APGD components of every version, not just rand's: what an adaptive run through a
        # randomised defense needs (a single draw per step attacks one noise sample, not the defense)
        self.eot_all_versions = bool(eot_all_versions)
        self.name = "aa-paper" if version == "paper" else "autoattack"
        self.last_broken_by: torch.Tensor | None = None
        self.last_stages: dict | None = None
        self.dropped: list[str] = []
        self.components()  # a component that cannot take these settings (FAB, Square: L-inf only) fails here,
        # not after the components before it have run

    def build(self, key: str) -> Attack:
        eps, n, kw = self.eps, self.steps, {"norm": self.norm, "dtype": self.dtype}
        restarts = 5 if self.version == "plus" else 1
        eot = self.eot_iter if self.version == "rand" or self.eot_all_versions else 1
        if key in ("apgd-ce", "apgd-dlr"):
            return APGD(eps, steps=n, loss=key[5:], restarts=restarts, eot_iter=eot, **kw)
        if key == "apgd-t":
            return APGDT(eps, steps=n, n_target_classes=self.n_target_classes, **kw)
        if key == "square":
            return Square(eps, queries=self.queries, **kw)
        if key in ("fab", "fab-t"):
            return FAB(eps, steps=n, targeted=key == "fab-t", restarts=1 if key == "fab-t" else restarts,
                       n_target_classes=self.n_target_classes, **kw)
        raise UnknownNameError("AutoAttack component", key, tuple(MIN_CLASSES))

    def component_names(self, num_classes=None) -> list[str]:
        names = list(version_components(self.version))
        if num_classes is not None:
            names = [k for k in names if int(num_classes) >= MIN_CLASSES.get(k, 2)]
        return names

    def components(self, num_classes=None) -> list[Attack]:
        return [self.build(k) for k in self.component_names(num_classes)]

    def _gen_for(self, generator, name):
        if isinstance(generator, dict):
            return generator.get(name)
        return generator

    def judge(self, model, x, y, generator, stream: str) -> torch.Tensor:
        """Misclassified on more than half of the attacker's own draws (one draw if deterministic)."""
        with torch.no_grad():
            if getattr(model, "defense", None) is None:
                return model(x).argmax(-1) != y
            from .adaptive import copy_generators

            k = self.judge_draws if _randomized(model) else 1
            xr = x if k == 1 else x.repeat(k, *([1] * (x.ndim - 1)))
            logits = model(xr, generator=copy_generators(generator, k, f"aa-judge:{stream}"))
            return (logits.argmax(-1) != y.repeat(k)).view(k, len(y)).float().mean(0) > 0.5

    def __call__(self, classifier, x, y, generator=None):
        with entry(x, f"{type(self).__name__}(classifier, x, y)"):  # checked once; its components' steps are not
            return self._run(classifier, x, y, generator)

    def _run(self, classifier, x, y, generator):
        x = x.detach().to(self.dtype)
        y = y.to(x.device)
        gen = generator if generator is not None else self.generator
        n_cls = getattr(classifier, "num_classes", None)
        if n_cls is None:
            with torch.no_grad():
                n_cls = classifier(x[:1]).shape[-1]
        names = self.component_names(n_cls)
        self.dropped = [k for k in version_components(self.version) if k not in names]
        fast = classifier  # a Defended module answers no-grad calls (Square, judging) on its inference path
        x_adv = x.clone()
        broken = torch.full((len(y),), len(names), dtype=torch.long, device=x.device)
        robust = ~self.judge(fast, x, y, self._gen_for(gen, "clean"), "clean")
        broken[~robust] = -1
        stages = {"clean": float(robust.float().mean()) if len(y) else 0.0}
        first = True
        for i, key in enumerate(names):
            todo = robust.nonzero().flatten()
            if todo.numel() == 0:
                stages[key] = 0.0
                continue
            atk = self.build(key)
            g = rng.subset(self._gen_for(gen, key), todo)
            model = fast if key == "square" else classifier
            with progress.part(i, len(names)):
                xa = atk(model, x[todo], y[todo], generator=g)
            fooled = self.judge(fast, xa, y[todo], g, key)
            if first:  # unfooled samples keep the first component's point
                x_adv[todo] = xa
                first = False
            else:
                x_adv[todo[fooled]] = xa[fooled]
            robust[todo[fooled]] = False
            broken[todo[fooled]] = i
            stages[key] = float(robust.float().mean())
        self.last_broken_by, self.last_stages, self._names = broken, stages, names
        return x_adv

    def config(self) -> dict:
        cfg = super().config()
        cfg.update(version=self.version, steps=self.steps, queries=self.queries,
                   n_target_classes=self.n_target_classes, components=list(version_components(self.version)))
        if self.version == "rand" or self.eot_all_versions:
            cfg.update(eot_iter=self.eot_iter, judge_draws=self.judge_draws)
            if self.version != "rand":
                cfg["eot_all_versions"] = True
        elif self.judge_draws != JUDGE_DRAWS:  # every version judges a randomised defense on these draws (the
            cfg["judge_draws"] = self.judge_draws  # default's keys unchanged)
        return cfg
