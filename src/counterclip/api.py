"""``counterclip.evaluate(...)``: the eval grid on Python objects (your defense instance, your attack class),
with the same records, cache and resume as ``counterclip eval``."""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path

from .budgets import parse_eps
from .plugins import build_plugin_defense, import_path, public_state, tag_attack, tag_plugin


def _registered(registry, cls) -> bool:
    """``cls`` is the class its registry holds under its own ``name`` (a built-in, not a user's subclass)."""
    name = getattr(cls, "name", "")
    return name in registry and registry.resolve(name) is cls


def _defense_entry(d, taken: set, defense_args: dict):
    from .defenses import DEFENSES, Defense

    if isinstance(d, str):
        return d, None
    built = inspect.isclass(d) and issubclass(d, Defense)
    if built:  # built as --defense pkg.mod:Cls is, with defense_args[its import path] (tagged there)
        is_builtin = _registered(DEFENSES, d)
        d = d(**defense_args.get(d.name, {})) if is_builtin else \
            build_plugin_defense(d, defense_args.get(import_path(d), {}))
    if not isinstance(d, Defense):
        raise TypeError(f"defenses: {d!r} is neither a name nor a counterclip.defenses.Defense instance")
    builtin = _registered(DEFENSES, type(d))
    label = d.name if builtin else import_path(d)
    base, k = label, 2
    while label in taken:  # two instances of one class: the params tell them apart in the report
        label, k = f"{base}#{k}", k + 1
    if not builtin and not built:  # an instance: keyed by its settings now
        tag_plugin(d, import_path(d), public_state(d))
    return label, d


def _attack_entry(a, taken: set):
    if isinstance(a, str):
        return a, None
    if inspect.isclass(a):  # the grid builds it as it builds --attack pkg.mod:Cls (--steps, --step-size, args)
        label, factory = import_path(a), a
    elif callable(a) and hasattr(a, "eps"):
        label = import_path(a)

        def factory(eps, template=a, label=label):  # an instance is a template: the grid sets its budget
            atk = copy.copy(template)
            atk.eps = parse_eps(eps, norm=getattr(template, "norm", "linf"))
            return tag_attack(atk, label, public_state(atk))
    else:
        raise TypeError(f"attacks: {a!r} is neither a name, an attack class nor an attack instance")
    base, k = label, 2
    while label in taken:
        label, k = f"{base}#{k}", k + 1
    return label, factory


def evaluate(output, *, model="tiny-fmnist", pretrained=None, datasets=("fashion-mnist",), attacks=("pgd",),
             eps=("4/255",), defenses=("none",), threat_model="oblivious", log=None, **options) -> list[dict]:
    """Run the eval grid and return its records (dicts, as written under ``output``).

    ``defenses``: CLI words (``"ttc"``), ``"pkg.module:ClassName"`` or ``Defense`` instances (a built-in
    instance keeps its settings; your own is keyed by its import path and its attributes) or ``Defense``
    classes (built with ``defense_args["pkg.module:ClassName"]``, as ``--defense`` builds them). ``attacks``:
    CLI words, ``"pkg.module:ClassName"``, an attack class (built as ``--attack`` builds it: ``eps=``, the
    run's ``steps`` / ``step_size`` when it takes them, ``attack_args["pkg.module:ClassName"]``) or an attack
    instance (copied per budget with ``eps`` set). ``model``: a name (``load_model``) or a
    ``ClipModel``. Other keyword arguments are ``EvalConfig`` fields (``limit``, ``steps``, ``seed``,
    ``defense_args``, ``eot_samples``, ``on_invalid``, ...).

    Outputs are checked as they enter the grid (``evaluation/validate.py``): with ``on_invalid="fail"`` (the
    default) a cell whose outputs fail is not recorded, the others run, and ``FailedCells`` is raised at the end
    (its ``.failures`` are the one-line reasons); ``on_invalid="skip"`` records such cells marked instead.
    """
    from .evaluation.config import EvalConfig
    from .evaluation.grid import GridRunner

    objects, dnames, anames = {}, [], []
    for d in defenses:
        label, obj = _defense_entry(d, set(dnames), options.get("defense_args") or {})
        dnames.append(label)
        if obj is not None:
            objects[label] = obj
    for a in attacks:
        label, factory = _attack_entry(a, set(anames))
        anames.append(label)
        if factory is not None:
            objects[label] = factory
    if not isinstance(model, str):
        objects["__model__"] = model
        pretrained = pretrained or getattr(model, "pretrained", None)
        model = getattr(model, "name", "") or type(model).__name__
    cfg = EvalConfig(output=str(output), model=model, pretrained=pretrained, datasets=list(datasets),
                     attacks=anames, eps=[str(e) if not isinstance(e, str) else e for e in eps], defenses=dnames,
                     threat_model=threat_model, objects=objects, **options)
    runner = GridRunner(cfg, log=log or (lambda *a, **k: None))
    written = runner.run()
    if runner.failures:  # as `counterclip eval` exits non-zero; the records that were written stay on disk
        from .evaluation.validate import FailedCells

        raise FailedCells(runner.failures, written)
    return [dict(json.loads(Path(p).read_text()), _path=str(p)) for p in written]
