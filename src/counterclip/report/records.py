"""Reading result records (``DIR/**/*.json``) and their ``.npz`` sidecars into one normalised form."""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..attacks import ADAPTIVE, ATTACKS
from ..budgets import eps_str as _format_eps
from ..defenses import DEFENSES
from ..errors import CounterclipError
from ..evaluation.integrity import file_matches, record_problem

SIDECAR_FIELDS = ("index", "label", "clean_correct", "robust_correct", "clean_tau", "adv_tau")

# Display order: the registries' (the import lines of attacks/ and defenses/), so a method added is placed
# once; names not registered (plugins, composed names such as autoattack-full) sort after these, alphabetically.
ATTACK_ORDER = ("none", *ATTACKS.names(), *ADAPTIVE.names())
DEFENSE_ORDER = tuple(DEFENSES.names())
THREAT_ORDER = ("oblivious", "adaptive")


def order_key(name: str, order: tuple) -> tuple:
    return (order.index(name), "") if name in order else (len(order), str(name))


def is_excluded_from_average(dataset: str) -> bool:
    """TinyImageNet is left out of the average, as in the paper (the finetuned baselines were trained on it)."""
    return re.sub(r"[^a-z0-9]", "", str(dataset).lower()) == "tinyimagenet"


def is_class_group(dataset: str) -> bool:
    """A ``DATASET [group]`` row of ``report --classes`` (``classes.py``): a subset of its dataset's images."""
    return re.fullmatch(r".+ \[[^\]]+\]", str(dataset)) is not None


def slug(text: str, max_len: int = 80) -> str:
    """A file-name-safe form of ``text``; a long one (a model label that carries run settings) keeps its start and
    a short hash of the whole, so names stay unique and below file systems' 255-byte limit."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"
    if len(s) > max_len:
        s = f"{s[:max_len - 9]}_{hashlib.sha1(str(text).encode()).hexdigest()[:8]}"
    return s


@dataclass
class Sidecar:
    index: np.ndarray
    label: np.ndarray
    clean_correct: np.ndarray
    robust_correct: np.ndarray
    clean_tau: np.ndarray
    adv_tau: np.ndarray


@dataclass
class Record:
    path: str                      # relative to the run directory
    model: str
    pretrained: str | None
    dataset: str
    attack: str
    eps: float
    eps_str: str
    defense: str
    defense_params: dict
    threat_model: str
    adaptive_attack: str | None
    clean_acc: float
    robust_acc: float
    n_samples: int | None
    clean_ci: tuple
    robust_ci: tuple
    sanity: dict
    sidecar_path: Path | None
    raw: dict = field(repr=False, default_factory=dict)
    defense_label: str = ""        # defense name, disambiguated by params where one name has several settings
    attack_label: str = ""         # attack name, or the adaptive attack's name for adaptive records
    attack_base: str = ""          # attack_label without the knobs that tell runs of one attack apart
    _sidecar: object = field(default=None, repr=False)
    sidecar_problem: str | None = None
    config_label: str = ""         # the run settings that set this record apart, when a folder mixes several
    config_note: str = ""          # those settings in full, where config_label is a short name ("config A")

    @property
    def model_label(self) -> str:
        label = self.model if not self.pretrained else f"{self.model} ({self.pretrained})"
        return f"{label} [{self.config_label}]" if self.config_label else label

    @property
    def attacked(self) -> bool:
        return self.attack != "none" and self.eps > 0

    @property
    def eps_key(self) -> float:
        return round(self.eps, 8)

    def sidecar(self) -> Sidecar | None:
        """The per-sample arrays, loaded once; None (and ``sidecar_problem`` set) when missing or unreadable."""
        if self._sidecar is None:
            self._sidecar = _load_sidecar(self)
        return self._sidecar or None


def _float(value, default=float("nan")) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _ci(value) -> tuple:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (_float(value[0]), _float(value[1]))
    return (float("nan"), float("nan"))


def _name(value, default="none") -> str:
    if isinstance(value, dict):
        value = value.get("name")
    return str(value) if value not in (None, "") else default


def _parse_record(data: dict, path: Path, run_dir: Path) -> Record:
    attack = data.get("attack") or {}
    if not isinstance(attack, dict):
        attack = {"name": attack}
    defense = data.get("defense") or {}
    if not isinstance(defense, dict):
        defense = {"name": defense}
    metrics = data["metrics"] or {}
    attack_name = _name(attack)
    eps = _float(attack.get("eps"), 0.0)
    if attack_name == "none" or not (eps > 0 and math.isfinite(eps)):
        eps = 0.0
    text = attack.get("eps_str")
    if not text:
        try:
            text = _format_eps(eps)
        except ValueError:
            text = str(eps)
    threat = str(data.get("threat_model") or "oblivious")
    adaptive = _name(data.get("adaptive_attack"), default="") or None
    if threat == "adaptive" and adaptive is None:
        adaptive = f"adaptive-{attack_name}"
    n = metrics.get("n_samples")
    sidecar = data.get("sidecar")
    sidecar_path = (path.parent / sidecar) if sidecar else None
    clean = _float(metrics.get("clean_acc"))
    robust = _float(metrics.get("robust_acc"), clean if attack_name == "none" else float("nan"))
    sanity = data.get("sanity")
    return Record(
        path=path.relative_to(run_dir).as_posix(), model=str(data.get("model", "?")),
        # pretrained_arg: what was passed (None: the model's own weights); pretrained is CLIP_benchmark's string
        pretrained=data["pretrained_arg"] if "pretrained_arg" in data else data.get("pretrained"), dataset=str(data.get("dataset", "?")), attack=attack_name,
        eps=eps, eps_str="0" if eps == 0 else str(text), defense=_name(defense),
        defense_params=defense.get("params") or {}, threat_model=threat, adaptive_attack=adaptive,
        clean_acc=clean, robust_acc=robust, n_samples=int(n) if isinstance(n, (int, float)) else None,
        clean_ci=_ci(metrics.get("clean_acc_ci95")), robust_ci=_ci(metrics.get("robust_acc_ci95")),
        sanity=sanity if isinstance(sanity, dict) else {}, sidecar_path=sidecar_path, raw=data)


def _load_sidecar(rec: Record):
    if rec.sidecar_path is None:
        rec.sidecar_problem = "no sidecar"
        return False
    if not rec.sidecar_path.is_file():
        rec.sidecar_problem = f"sidecar {rec.sidecar_path.name} missing"
        return False
    integ = rec.raw.get("integrity")
    if isinstance(integ, dict) and not file_matches(rec.sidecar_path, integ.get("sidecar_sha256")):
        rec.sidecar_problem = f"sidecar {rec.sidecar_path.name} damaged (checksum mismatch)"
        warnings.warn(f"report: {rec.path}: {rec.sidecar_problem}; its per-sample data is not used", stacklevel=2)
        return False
    try:
        with np.load(rec.sidecar_path, allow_pickle=False) as z:
            missing = [k for k in ("index", "robust_correct") if k not in z.files]
            if missing:
                rec.sidecar_problem = f"sidecar lacks {', '.join(missing)}"
                return False
            n = len(z["index"])
            arrays = {}
            for k in SIDECAR_FIELDS:
                if k in z.files:
                    arrays[k] = np.asarray(z[k]).reshape(-1)
                elif k.endswith("tau"):
                    arrays[k] = np.full(n, np.nan, dtype=np.float32)
                else:
                    arrays[k] = np.zeros(n, dtype=np.int64 if k == "label" else bool)
    except Exception as exc:  # a damaged file must not stop the report
        rec.sidecar_problem = f"sidecar unreadable ({type(exc).__name__}: {exc})"
        return False
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        rec.sidecar_problem = f"sidecar arrays differ in length {lengths}"
        return False
    arrays["index"] = arrays["index"].astype(np.int64)
    for k in ("clean_correct", "robust_correct"):
        arrays[k] = arrays[k].astype(bool)
    for k in ("clean_tau", "adv_tau"):
        arrays[k] = arrays[k].astype(np.float64)
    return Sidecar(**arrays)


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value
    if len(text) <= 24:
        return text
    return "#" + hashlib.sha256(text.encode()).hexdigest()[:8]


CONFIG_LABEL_MAX = 40   # a longer settings label becomes "config A", its settings listed once in results.md


def _assign_config_labels(records: list[Record]) -> list[str]:
    """Where records were made with different run settings (seed, steps, prompts, precision, weights, package
    version, ...), label each with its differing values; model_label carries the label, so every table,
    worst case and figure keeps the configurations apart. Only keys every record with settings carries set them
    apart (a record from an older version, or from a command that records none, is "settings unrecorded"). A
    label too long for a heading becomes "config A", ... with the settings in ``config_note``. Returns the
    differing setting names."""
    from ..evaluation.settings import ATTACK_KNOBS  # these label the attacks instead (_attack_knobs)

    settings = [{k: v for k, v in r.raw["settings"].items() if k not in ATTACK_KNOBS}
                if isinstance(r.raw.get("settings"), dict) else None for r in records]
    if len({json.dumps(s, sort_keys=True, default=str) for s in settings}) <= 1:
        return []
    have = [s for s in settings if s is not None]
    keys = sorted(set.intersection(*(set(s) for s in have))) if have else []
    differing = [k for k in keys if len({json.dumps(s[k], sort_keys=True, default=str) for s in have}) > 1]
    full = ["settings unrecorded" if s is None else ", ".join(f"{k}={_short(s[k])}" for k in differing)
            for s in settings]
    towers = {"vision_checkpoint", "vision_checkpoint_sha256"}
    if set(differing) <= towers and "vision_checkpoint" in differing:  # one model, several towers: name them
        named = ["settings unrecorded" if s is None else
                 f"tower {Path(str(s['vision_checkpoint'])).name}" if s["vision_checkpoint"] else "original tower"
                 for s in settings]
        if len(set(named)) == len(set(full)):  # the names alone keep the configurations apart
            full = named
    long = sorted({f for f in full if len(f) > CONFIG_LABEL_MAX})
    short = {f: f"config {chr(ord('A') + i)}" if i < 26 else f"config {i + 1}" for i, f in enumerate(long)}
    for r, f in zip(records, full):
        r.config_label = short.get(f, f)
        r.config_note = f if f in short else ""
    return differing


_NOT_KNOBS = {"eps", "eps_str", "gradient", "selection", "threat_model", "step_size"}  # (shown as step_size_str)


def _attack_knobs(r: Record) -> dict:
    """What the record's attack was run with (its config, nested dicts flattened to ``a.b``), but its budget;
    ``step_size`` is shown as its fraction (``step_size=1/255``)."""
    cfg = r.raw.get("adaptive_attack") if r.threat_model == "adaptive" else r.raw.get("attack")
    out: dict = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif k == "step_size_str":
                out[prefix + "step_size"] = v
            elif k not in _NOT_KNOBS and (prefix or k != "name"):
                out[prefix + k] = v

    if isinstance(cfg, dict):
        walk(cfg)
    return out


def _label_attack_knobs(records: list[Record]) -> None:
    """Where one cell (model, dataset, eps, defense) holds one attack run with different knobs (``--steps``,
    ``--attack-arg eot-pgd.steps=100``, ...), label that attack everywhere with the knobs that differ, so each run
    keeps its own column and the worst case is taken over all of them."""
    cells: dict[tuple, list[Record]] = {}
    for r in records:
        if r.attacked:
            cells.setdefault((r.attack_label, r.threat_model, r.model_label, r.dataset, r.eps_key, r.defense_label),
                             []).append(r)
    differing: dict[tuple, set] = {}
    for (label, threat, *_), recs in cells.items():
        if len(recs) > 1:  # keys only some records have (written by an older version) do not set them apart
            knobs = [_attack_knobs(r) for r in recs]
            for k in set.intersection(*(set(kn) for kn in knobs)):
                if len({json.dumps(kn[k], sort_keys=True, default=str) for kn in knobs}) > 1:
                    differing.setdefault((label, threat), set()).add(k)
    for r in records:
        r.attack_base = r.attack_label
        keys = sorted(differing.get((r.attack_label, r.threat_model), ()))
        if keys and r.attacked:
            kn = _attack_knobs(r)
            r.attack_label += "[" + ",".join(f"{k}={_short(kn.get(k, '?'))}" for k in keys) + "]"


def _assign_labels(records: list[Record]) -> None:
    """Defense label: the name, plus the differing params where one name runs with several settings."""
    by_name: dict[str, list[Record]] = {}
    for r in records:
        by_name.setdefault(r.defense, []).append(r)
    for name, recs in by_name.items():
        params = {json.dumps(r.defense_params, sort_keys=True, default=str) for r in recs}
        if len(params) <= 1:
            for r in recs:
                r.defense_label = name
            continue
        keys = sorted({k for r in recs for k in r.defense_params})
        differing = [k for k in keys if len({json.dumps(r.defense_params.get(k), default=str) for r in recs}) > 1]
        for r in recs:
            bits = ",".join(f"{k}={r.defense_params[k]}" for k in differing if k in r.defense_params)
            r.defense_label = f"{name}[{bits or 'defaults'}]"
    bases: dict[str, set] = {}
    for r in records:
        if r.threat_model == "adaptive":
            bases.setdefault(r.adaptive_attack, set()).add(r.attack)
    for r in records:
        if r.threat_model == "adaptive":
            several = len(bases[r.adaptive_attack]) > 1
            r.attack_label = f"{r.adaptive_attack}[{r.attack}]" if several else str(r.adaptive_attack)
        else:
            r.attack_label = r.attack


def newer_schema(data: dict) -> str | None:
    """Records of every layout up to ``SCHEMA_VERSION`` are read (those without the field are version 1); a
    newer one is named, not guessed at."""
    from ..evaluation.keys import SCHEMA_VERSION

    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        return f"schema_version {version!r} is newer than this counterclip reads ({SCHEMA_VERSION}): upgrade counterclip"
    return None


def load_records(run_dir, skip_under=(), problems: list | None = None, command: str = "report") -> list[Record]:
    """All result records below ``run_dir``; ``.state/`` folders, non-records and ``skip_under`` are ignored.

    Unreadable JSON files are skipped with a warning (also appended to ``problems`` when given); warnings and
    errors start with ``command`` (the CLI command reading the records).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CounterclipError(f"{command}: {run_dir} is not a directory")
    skip = [Path(p).resolve() for p in skip_under]
    records = []
    for path in sorted(run_dir.rglob("*.json")):
        rel = path.relative_to(run_dir)
        if ".state" in rel.parts[:-1]:
            continue
        resolved = path.resolve()
        if any(resolved.is_relative_to(s) for s in skip):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            msg = f"skipped unreadable {rel.as_posix()} ({exc})"
            warnings.warn(f"{command}: {msg}", stacklevel=2)
            if problems is not None:
                problems.append(msg)
            continue
        if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
            continue
        problem = record_problem(data) or newer_schema(data)
        if problem is None:
            try:
                rec = _parse_record(data, path, run_dir)
            except Exception as exc:  # valid JSON of the wrong shape: name it, never a traceback
                problem = f"malformed ({type(exc).__name__}: {exc})"
        if problem is not None:
            msg = f"skipped damaged record {rel.as_posix()}: {problem}"
            warnings.warn(f"{command}: {msg}", stacklevel=2)
            if problems is not None:
                problems.append(msg)
            continue
        records.append(rec)
    if not records:
        raise CounterclipError(f"{command}: no result records (JSON files with \"metrics\") found under {run_dir}")
    _assign_config_labels(records)
    _assign_labels(records)
    _label_attack_knobs(records)
    return records


def sort_records(records: list[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (
        r.model_label, r.dataset, order_key(r.threat_model, THREAT_ORDER), order_key(r.attack, ATTACK_ORDER),
        str(r.adaptive_attack), r.eps, order_key(r.defense, DEFENSE_ORDER), r.defense_label, r.path))
