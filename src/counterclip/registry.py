"""One ``Registry`` for every kind of named thing: attacks, adaptive attacks, defenses, datasets, model backends,
fine-tuning methods. The CLI's choices, ``--help`` lists, the report's order and the docs' tables are read
from the registries, never typed twice.

Modelled on lm-evaluation-harness's registry: a built-in registers itself where it is defined
(``@DEFENSES.register("ttc")``), under aliases if it has them; a ``pkg.mod:Cls`` name (a user's plugin) resolves
through the same path, with the same base-class check; keyword arguments are checked against the signature
before anything is built; an unknown name is answered with the valid ones and the closest match.

An entry may fix keywords (``@ATTACKS.register("cw", fixed={"loss": "cw"})`` on ``PGD``): the word means the
class with those keywords, and a user cannot override them. ``meta`` holds data for help and docs tables
(``paper=...``, ``summary=...``).
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import CounterclipError, UnknownNameError

T = TypeVar("T")


@dataclass
class Entry:
    name: str
    target: Any  # the class (or factory), or "pkg.mod:attr" until first use
    aliases: tuple = ()
    fixed: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The first line of the docstring, or ``meta["summary"]``."""
        if "summary" in self.meta:
            return self.meta["summary"]
        doc = inspect.getdoc(self.target) if not isinstance(self.target, str) else None
        return doc.strip().splitlines()[0] if doc else ""


def is_import_path(name) -> bool:
    """``pkg.module:Name``: something to import, not a registered word (model ids like ``hf:...`` excepted)."""
    return isinstance(name, str) and ":" in name and not name.startswith(("hf:", "hf-hub:", "local-dir:"))


class Registry(Generic[T]):
    """``Registry(kind, base=None, plugins=True)``: names -> classes (or factories) of one kind.

    ``base``: a class (or ``"pkg.mod:Cls"``) every entry and plugin must subclass. ``plugins``: whether a
    ``pkg.mod:Cls`` name is accepted in place of a registered word."""

    def __init__(self, kind: str, base=None, plugins: bool = True, base_label: str | None = None):
        self.kind = kind
        self._base = base
        self.base_label = base_label  # how errors name the base (default: its import path)
        self.plugins = plugins
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    # -- registering -----------------------------------------------------------------------------------------
    def register(self, name: str, *aliases: str, fixed: dict | None = None, before: str | None = None,
                 **meta) -> Callable[[T], T]:
        """Decorator: ``@REG.register("word", "alias", fixed={...}, summary="...")``."""

        def deco(target):
            self.add(name, target, *aliases, fixed=fixed, before=before, **meta)
            return target

        return deco

    def add(self, name: str, target, *aliases: str, fixed: dict | None = None, before: str | None = None,
            **meta) -> Entry:
        """Register ``target`` (a class, a factory, or a lazy ``"pkg.mod:attr"`` string) under ``name``; the
        order of registration is the order of help lists and reports, unless ``before`` names an entry to
        precede (a baseline listed before the method it derives from, whose module it imports)."""
        key = name.lower()
        for n in (key, *(a.lower() for a in aliases)):
            if n in self._entries or n in self._aliases:
                raise ValueError(f"{self.kind} {n!r} is registered twice")
        entry = Entry(key, target, tuple(a.lower() for a in aliases), dict(fixed or {}), meta)
        self._entries[key] = entry
        if before is not None:
            names = [n for n in self._entries if n != key]
            names.insert(names.index(self.canonical(before)), key)
            self._entries = {n: self._entries[n] for n in names}
        for a in entry.aliases:
            self._aliases[a] = key
        return entry

    # -- looking up ------------------------------------------------------------------------------------------
    def names(self, aliases: bool = False) -> list[str]:
        """Registered words in registration order (``aliases=True`` adds the aliases)."""
        out = list(self._entries)
        return out + list(self._aliases) if aliases else out

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and self.canonical(name, strict=False) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def canonical(self, name: str, strict: bool = True) -> str | None:
        """The registered word for ``name`` or one of its aliases (``pkg.mod:Cls`` names stay as given)."""
        key = str(name).lower()
        if key in self._entries:
            return key
        if key in self._aliases:
            return self._aliases[key]
        if self.plugins and is_import_path(name):
            return str(name)
        if strict:
            self.unknown(name)
        return None

    def entry(self, name: str) -> Entry:
        key = self.canonical(name)
        if key in self._entries:
            return self._entries[key]
        return Entry(key, key)  # a plugin: its import path is its target

    def unknown(self, name, extra=()):
        valid = self.names() + list(extra) + (["pkg.module:ClassName"] if self.plugins else [])
        close = difflib.get_close_matches(str(name).lower(), self.names(aliases=True), n=1)
        err = UnknownNameError(self.kind, str(name), valid)
        if close:
            err.args = (f"{err.args[0]} (did you mean {close[0]!r}?)",)
        raise err

    def resolve(self, name: str):
        """The class (or factory) behind ``name``: a registered word, an alias, or ``pkg.mod:Cls``."""
        entry = self.entry(name)
        if isinstance(entry.target, str):
            from .plugins import load_class

            entry.target = load_class(entry.target, self.kind)
            self._check_base(entry.target, name)
        return entry.target

    @property
    def base(self):
        if isinstance(self._base, str):
            from .plugins import load_class

            self._base = load_class(self._base, f"{self.kind} base")
        return self._base

    def _check_base(self, target, name) -> None:
        base = self.base
        if base is not None and not (inspect.isclass(target) and issubclass(target, base)):
            label = self.base_label or f"{base.__module__}.{base.__qualname__}"
            raise CounterclipError(f"{self.kind} {name!r}: {getattr(target, '__name__', target)} does not subclass "
                                   f"{label}")

    # -- building --------------------------------------------------------------------------------------------
    def parameters(self, name: str) -> tuple[list[str], bool]:
        """The keyword parameters ``name`` takes (its fixed ones excluded) and whether it takes ``**kwargs``."""
        from .plugins import accepted_params

        names, var_kw = accepted_params(self.resolve(name))
        fixed = self.entry(name).fixed
        return [n for n in names if n not in fixed], var_kw

    def check(self, name: str, kwargs: dict, reserved=(), kind: str | None = None) -> None:
        """Raise one line for a keyword ``name`` does not take (``reserved``: set by the caller, not the user;
        ``kind``: how the message names the kind, default the registry's)."""
        from .plugins import check_args

        check_args(self.resolve(name), kwargs, kind or self.kind, name, (*reserved, *self.entry(name).fixed))

    def build(self, name: str, /, *args, offered: dict | None = None, **kwargs) -> T:
        """``name``'s class called with ``*args`` and ``kwargs`` (checked against its signature), plus those of
        ``offered`` it accepts and ``kwargs`` does not set (run-wide settings such as ``steps``), plus the
        entry's fixed keywords. A ``TypeError``/``ValueError`` from the constructor becomes one line."""
        target = self.resolve(name)
        self.check(name, kwargs)
        params, var_kw = self.parameters(name)
        kw = {k: v for k, v in (offered or {}).items() if k in params and k not in kwargs}
        kw.update(kwargs)
        kw.update(self.entry(name).fixed)
        try:
            return target(*args, **kw)
        except CounterclipError:
            raise
        except (TypeError, ValueError) as e:
            raise CounterclipError(f"{self.kind} {name}: {e}") from None

    def table(self) -> list[tuple[str, str]]:
        """``(word with aliases, summary)`` per entry, for help texts and docs tables."""
        return [(", ".join((e.name,) + e.aliases), e.summary) for e in self._entries.values()]
