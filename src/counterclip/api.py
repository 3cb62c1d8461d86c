"""``counterclip.evaluate(...)``: the eval grid on Python objects (your defense instance, your attack class),
with the same records, cache and resume as ``counterclip eval``."""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path

from .plugins import accepted_params, import_path, tag_attack, tag_plugin


def _public_state(obj) -> dict:
    """What an object's settings look like, for its cache key when it has no ``params()`` of its own."""
    out = {}
    for k, v in sorted(vars(obj).items()):
        if k.startswith("_") or k in ("plugin", "params", "config"):
            continue
        out[k] = v if isinstance(v, (bool, int, float, str, type(None))) else repr(v)[:200]
    return out


def _defense_entry(d, taken: set):
    from .defenses import DEFENSES, Defense

    if isinstance(d, str):
        return d, None
    if inspect.isclass(d):
        d = d()
    if not isinstance(d, Defense):
        raise TypeError(f"defenses: {d!r} is neither a name nor a counterclip.defenses.Defense instance")
    builtin = DEFENSES.get(getattr(d, "name", "")) is type(d)
    label = d.name if builtin else import_path(d)
    base, k = label, 2
    while label in taken:  # two instances of one class: the params tell them apart in the report
        label, k = f"{base}#{k}", k + 1
    if not builtin:
        tag_plugin(d, import_path(d), _public_state(d))
    return label, d


def _attack_entry(a, cfg_steps, taken: set):
    if isinstance(a, str):
        return a, None
    if inspect.isclass(a):
        names, _ = accepted_params(a)
        label = import_path(a)

        def factory(eps, cls=a, label=label):
            kw = {"steps": cfg_steps} if "steps" in names and cfg_steps is not None else {}
            return tag_attack(cls(eps=eps, **kw), label, kw)
    elif callable(a) and hasattr(a, "eps"):
        label = import_path(a)

        def factory(eps, template=a, label=label):  # an instance is a template: the grid sets its budget
            atk = copy.copy(template)
            atk.eps = float(eps)
            return tag_attack(atk, label, _public_state(atk))
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
    instance keeps its settings; your own is keyed by its import path and its attributes). ``attacks``: CLI
    words, ``"pkg.module:ClassName"``, an attack class (called with ``eps=``, and ``steps=`` when it takes
    it) or an attack instance (copied per budget with ``eps`` set). ``model``: a name (``load_model``) or a
    ``ClipModel``. Other keyword arguments are ``EvalConfig`` fields (``limit``, ``steps``, ``seed``,
    ``defense_args``, ``eot_samples``, ...).
    """
    from .evaluation.config import EvalConfig
    from .evaluation.grid import GridRunner

    objects, dnames, anames = {}, [], []
    for d in defenses:
        label, obj = _defense_entry(d, set(dnames))
        dnames.append(label)
        if obj is not None:
            objects[label] = obj
    for a in attacks:
        label, factory = _attack_entry(a, options.get("steps"), set(anames))
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
    written = GridRunner(cfg, log=log or (lambda *a, **k: None)).run()
    return [dict(json.loads(Path(p).read_text()), _path=str(p)) for p in written]
