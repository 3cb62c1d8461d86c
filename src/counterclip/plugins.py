"""Your own defense or attack in the grid, and one way to configure any of them.

* ``--defense pkg.module:ClassName`` / ``--attack pkg.module:ClassName`` load a class from a module on the
  Python path (or in the current directory). A defense subclasses ``counterclip.defenses.Defense``; an attack
  is called ``attack(classifier, x, y, generator=None) -> x_adv`` and has ``.eps`` and ``.config()``
  (subclassing ``counterclip.attacks.Attack`` gives both). See docs/extending.md.
* ``--defense-arg NAME.key=value`` / ``--attack-arg NAME.key=value`` pass keyword arguments to a defense or
  attack (built-in or yours), validated against its class's signature: an unknown key fails in one line that
  lists the valid ones. ``NAME.`` may be left out when only one defense (attack) is listed. Values are Python
  literals where they parse as one (``2``, ``0.5``, ``inf``, ``true``, ``(0, 1)``), else strings (``auto``,
  ``4/255``).

The records and cache keys of a plugin carry its import path and its arguments.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib
import inspect
import math
import os
import re
import sys

from .errors import CounterclipError

_WORDS = {"true": True, "false": False, "none": None, "null": None, "inf": math.inf, "+inf": math.inf,
          "-inf": -math.inf}


def is_plugin(name) -> bool:
    """``pkg.module:ClassName``: a class to import, not a built-in word."""
    from .registry import is_import_path

    return is_import_path(name)


def load_class(spec: str, kind: str):
    """The class named by ``pkg.module:ClassName`` (the current directory is tried when the module is not on
    the Python path, as ``python -m`` would)."""
    module_name, _, qualname = spec.partition(":")
    if not module_name or not qualname:
        raise CounterclipError(f"{kind} {spec!r}: expected pkg.module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name.split(".")[0] or os.getcwd() in sys.path:
            raise CounterclipError(f"{kind} {spec!r}: cannot import {module_name} ({e})") from None
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e2:
            raise CounterclipError(f"{kind} {spec!r}: cannot import {module_name} ({e2}); put its folder on "
                                   "PYTHONPATH") from None
    except Exception as e:  # the user's module raised while importing: say where, in one line
        raise CounterclipError(f"{kind} {spec!r}: importing {module_name} failed: {type(e).__name__}: {e}") from None
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise CounterclipError(f"{kind} {spec!r}: {module_name} has no {qualname}")
    if not inspect.isclass(obj):
        raise CounterclipError(f"{kind} {spec!r}: {qualname} is not a class")
    return obj


def parse_value(text: str):
    t = text.strip()
    if t.lower() in _WORDS:
        return _WORDS[t.lower()]
    try:
        return ast.literal_eval(t)
    except (ValueError, SyntaxError):
        return t


def parse_assignments(items, names, kind: str, prefixed=()) -> dict:
    """``["ttc.tau_thres=auto", "k=v", ...]`` -> ``{name: {key: value}}`` for the listed ``names`` (the
    defenses or attacks of the run). ``name.`` is optional when one name (besides ``none``) is listed.
    ``prefixed``: further names that take arguments only when named (the adaptive attacks)."""
    out: dict = {}
    real = [n for n in names if n != "none"]
    for item in items or ():
        lhs, eq, value = str(item).partition("=")
        if not eq or not lhs.strip():
            raise CounterclipError(f"--{kind}-arg {item!r}: expected NAME.key=value (or key=value)")
        lhs = lhs.strip()
        target, key = None, lhs
        for name in sorted([*names, *prefixed], key=len, reverse=True):  # names may hold dots (pkg.mod:Cls)
            if lhs.startswith(name + "."):
                target, key = name, lhs[len(name) + 1:]
                break
        if target is None:
            if "." in lhs:
                valid = ", ".join([*real, *prefixed]) or "none"
                raise CounterclipError(f"--{kind}-arg {item!r}: {lhs.rpartition('.')[0]!r} is not among the "
                                       f"{kind}s of this run ({valid})")
            if not real:
                raise CounterclipError(f"--{kind}-arg {item!r}: no {kind} of this run takes arguments (only "
                                       f"{', '.join(names) or 'none'} listed)")
            if len(real) != 1:
                raise CounterclipError(f"--{kind}-arg {item!r} is ambiguous with {len(real)} {kind}s listed "
                                       f"({', '.join(real)}): write NAME.{lhs}=..., NAME one of them")
            target = real[0]
        if not key.isidentifier():
            raise CounterclipError(f"--{kind}-arg {item!r}: {key!r} is not a parameter name")
        out.setdefault(target, {})[key] = parse_value(value)
    return out


def accepted_params(cls) -> tuple[list[str], bool]:
    """Keyword parameters of ``cls(...)`` and whether it also takes ``**kwargs``."""
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return [], True
    names, var_kw = [], False
    for p in sig.parameters.values():
        if p.kind == p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.append(p.name)
    return names, var_kw


def check_args(cls, args: dict, kind: str, label: str, reserved=()) -> None:
    names, var_kw = accepted_params(cls)
    if var_kw:
        return
    valid = [n for n in names if n not in reserved]
    for key in args:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CounterclipError(f"unknown argument {key!r} for {kind} {label} ({cls.__name__}){hint}; valid: "
                                   f"{', '.join(valid) or '(none)'}")


def _call(cls, kwargs, kind: str, label: str):
    try:
        return cls(**kwargs)
    except CounterclipError:
        raise
    except (TypeError, ValueError) as e:
        raise CounterclipError(f"{kind} {label}: {e}") from None


def public_state(obj) -> dict:
    """An object's public settings (its attributes), for the cache key of a user's defense or attack: the
    same for an instance passed to ``counterclip.evaluate`` and for the class built by ``--defense``."""
    out = {}
    for k, v in sorted(vars(obj).items()):
        if k.startswith("_") or k in ("plugin", "params", "config", "plugin_name"):
            continue
        if isinstance(v, (bool, int, float, str, type(None))):
            out[k] = v
        else:  # a repr with a memory address would change the key on every run: name the type instead
            text = repr(v)
            out[k] = f"<{type(v).__qualname__}>" if re.search(r" at 0x[0-9a-fA-F]+", text) else text[:200]
    return out


def import_path(obj) -> str:
    cls = obj if inspect.isclass(obj) else type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


# -- defenses ------------------------------------------------------------------------------------------------
def defense_class(name: str):
    """The class behind a registered defense word or a user's ``pkg.module:ClassName`` (same registry, same
    base-class check)."""
    from .defenses import DEFENSES

    return DEFENSES.resolve(name)


def build_plugin_defense(spec, args: dict):
    """An instance of a user's defense (``spec``: ``pkg.module:ClassName`` or the class), tagged with its
    import path and arguments (records, cache keys). The tagged arguments are the instance's public settings
    with the given ones over them, so ``--defense pkg.mod:Cls`` (defaults) and ``evaluate(defenses=[Cls()])``
    share one cache key, while different given arguments never do."""
    cls = spec if inspect.isclass(spec) else defense_class(spec)
    spec = import_path(cls) if inspect.isclass(spec) else spec
    check_args(cls, args, "defense", spec)
    defense = _call(cls, dict(args), "defense", spec)
    tag_plugin(defense, spec, {**public_state(defense), **args})
    return defense


def tag_plugin(obj, spec: str, args: dict) -> None:
    """Make ``obj.params()`` carry the import path and the arguments, so that records and cache keys do. A
    ``partial`` over the object, not a closure: the object still pickles, and a deep copy reports its own
    params."""
    obj.plugin = {"import_path": spec, "args": dict(args)}
    obj.params = functools.partial(_tagged_params, obj)


def _tagged_params(obj) -> dict:
    own = type(obj).params(obj) if hasattr(type(obj), "params") else {}
    return {**(own or {}), "plugin": obj.plugin}


# -- attacks -------------------------------------------------------------------------------------------------
def check_attack_args(name: str, args: dict, cls=None) -> None:
    if cls is not None or is_plugin(name):
        cls = cls or load_class(name, "attack")
        check_args(cls, args, "attack", name, reserved=("eps",))
        return
    from .attacks import ATTACKS

    ATTACKS.check(name, args, reserved=("eps", "generator", "dtype"))


# keywords the grid sets itself for an adaptive attack: its budget, its gradient mode (the word), its streams
_ADAPTIVE_RESERVED = ("eps", "mode", "generator", "dtype")


def check_adaptive_args(name: str, args: dict) -> None:
    """``--attack-arg eot-pgd.steps=100``: checked against the adaptive attack's signature, then built once,
    so a bad key or value fails now in one line, not mid-run."""
    from .attacks.adaptive import ADAPTIVE, build_adaptive

    ADAPTIVE.check(name, args, reserved=_ADAPTIVE_RESERVED, kind="attack")
    try:
        build_adaptive(name, 1 / 255, **args)
    except (ValueError, TypeError, CounterclipError) as e:  # the registry's line names the attack
        shown = ", ".join(f"{name}.{k}={v!r}" for k, v in args.items())
        raise CounterclipError(f"--attack-arg {shown}: {e}") from None


def build_plugin_attack(spec, eps: float, args: dict, steps=None, step_size=None):
    """A user's attack at budget ``eps`` (``spec``: ``pkg.module:ClassName`` or the class); the run's
    ``--steps`` / ``--step-size`` go to it when its signature takes them and ``args`` does not set them."""
    cls = spec if inspect.isclass(spec) else load_class(spec, "attack")
    spec = import_path(cls) if inspect.isclass(spec) else spec
    check_args(cls, args, "attack", spec, reserved=("eps",))
    names, var_kw = accepted_params(cls)
    kw = dict(args)
    if "steps" in names and "steps" not in kw and steps is not None:
        kw["steps"] = steps
    if "step_size" in names and "step_size" not in kw and step_size is not None:
        kw["step_size"] = step_size
    attack = _call(cls, {"eps": eps, **kw}, "attack", spec)
    return tag_attack(attack, spec, args)


def tag_attack(attack, spec: str, args: dict):
    """Check the attack protocol and make ``attack.config()`` carry the import path and the arguments."""
    for need in ("eps", "config"):
        if not hasattr(attack, need):
            raise CounterclipError(f"attack {spec!r}: {type(attack).__name__} has no .{need} (subclass "
                                   "counterclip.attacks.Attack, or give it .eps and .config())")
    attack.plugin = {"import_path": import_path(attack), "args": dict(args)}
    attack.plugin_name = spec
    attack.config = functools.partial(_tagged_config, attack)
    if not getattr(attack, "name", None) or attack.name == "attack":
        attack.name = spec
    return attack


def _tagged_config(attack) -> dict:
    own = type(attack).config(attack) if hasattr(type(attack), "config") else {}
    return {**(own or {}), "name": attack.plugin_name, "plugin": attack.plugin}
