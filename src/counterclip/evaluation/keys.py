"""Cache keys and record paths, in one place. Golden tests (tests/golden) pin them: a folder written by an
earlier version resumes with nothing recomputed only while these stay as they are.

``SCHEMA_VERSION`` is the record layout's version (``record.py``). A change that must alter a key or a record
field bumps it once, on purpose, and reads older folders through an explicit migration that keeps their work.
Version 1 is the layout of every record written before the field existed (they carry no ``schema_version``).
"""

from __future__ import annotations

from pathlib import Path

from ..budgets import eps_str
from .state import file_sha256, stable_hash

SCHEMA_VERSION = 1


def path_name(name: str) -> str:
    """A grid name as a file-name part: built-in words unchanged, ``pkg.mod:Class`` -> ``pkg.mod-Class``."""
    return name.replace(":", "-").replace("/", "-")


def eps_tag(eps: float) -> str:
    return eps_str(eps).replace("/", "-")


# -- the cells' chunk folders under DIR/.state/<dataset>/ -----------------------------------------------------
def clean_folder(state: Path, base_key: dict) -> Path:
    return state / f"clean-{stable_hash(base_key)}"


def adv_folder(state: Path, base_key: dict, aname: str, attack) -> Path:
    key = {**base_key, "attack": attack.config()}
    return state / f"adv-{path_name(aname)}-{eps_tag(attack.eps)}-{stable_hash(key)}"


def defense_folder(state: Path, base_key: dict, dname: str, params: dict, inputs: str, eval_draws: int) -> Path:
    """The defense's predictions on ``inputs`` ("clean" or the name of an adversarial cell folder)."""
    key = {**base_key, "defense": dname, "params": params, "inputs": inputs}
    if eval_draws > 1:
        key["eval_draws"] = eval_draws
    return state / f"def-{path_name(dname)}-{stable_hash(key)}"


def adaptive_folder(state: Path, base_key: dict, aname: str, eps: float, dname: str, attack_config: dict,
                    params: dict, x_init: Path | None, eval_draws: int) -> Path:
    key = {**base_key, "adaptive": attack_config, "defense": dname, "params": params,
           "x_init": x_init.name if x_init is not None else None}
    if eval_draws > 1:  # its chunks then hold the re-drawn correctness too (keys of R = 1 unchanged)
        key["eval_draws"] = eval_draws
    return state / f"adaptive-{aname}-{path_name(dname)}-{eps_tag(eps)}-{stable_hash(key)}"


# -- records -------------------------------------------------------------------------------------------------
def attack_record_cfg(aname: str, eps: float, attack) -> dict:
    """The record's ``attack`` block (the oblivious attack, or the budget an adaptive one ran at)."""
    cfg = {"name": aname, "eps": eps, "eps_str": eps_str(eps), "steps": 0, "step_size": 0.0}
    if attack is not None:
        c = attack.config()
        cfg.update(steps=c.get("steps"), step_size=c.get("step_size"),
                   **{k: v for k, v in c.items() if k not in cfg})
    return cfg


def record_key(out: Path, dataset: str, base_key: dict, aname: str, eps: float, attack, dname: str, params: dict,
               threat: str, adaptive_config: dict | None, x_init_config: dict | None, limit,
               eval_draws: int) -> tuple[Path, str]:
    """The record's path and its full configuration key (kept in the record, checked on resume)."""
    key = {**base_key, "attack": attack_record_cfg(aname, eps, attack), "defense": dname, "params": params,
           "threat_model": threat, "adaptive": adaptive_config, "limit": limit}
    if x_init_config is not None:  # a gate attack extends the oblivious point: another oblivious attack, another record
        key["x_init"] = x_init_config
    if eval_draws > 1:  # a record with re-drawn metrics is another record (keys of R = 1 unchanged)
        key["eval_draws"] = eval_draws
    stem = f"{path_name(aname)}_{eps_tag(eps)}_{path_name(dname)}_{threat}_{stable_hash(key, 8)}"
    return out / dataset / f"{stem}.json", stable_hash(key, 32)


# -- what identifies the model and the data -------------------------------------------------------------------
def model_identity(cfg, model, given) -> dict:
    from ..models.registry import robust_tower_path

    tower_file = robust_tower_path(cfg.vision_checkpoint)  # a shipped tower's name -> its packaged file
    return {"model": cfg.model, "pretrained": cfg.pretrained,
            "vision_checkpoint_sha256": file_sha256(tower_file) if tower_file else None,
            "weights_sha256": weights_fingerprint(cfg.model, cfg.pretrained) if given is None
            else module_fingerprint(given),
            "activation": model.activation}


def base_key(model_id: dict, data, image_size: int, indices, seed: int, version: str, precision: str) -> dict:
    """What every cell of one dataset shares (the run's ``tau`` and ``quantize`` entries are added once the
    defenses are built: ``finish_base_key``)."""
    key = {**model_id, "dataset": data.name, "split": data.split, "source": data.source, "data": data.cache_fields(),
           "classnames": data.classnames, "templates": data.templates, "preprocess": data.preprocess,
           "image_size": image_size, "indices": stable_hash(indices.tolist(), 32), "seed": seed, "version": version}
    if precision == "fp16-all":  # every cell differs (fp32 keys stay as they were)
        key["precision"] = precision
    return key


def finish_base_key(key: dict, quantize: str, ttc_eps: float, base_tower: bool) -> None:
    if quantize != "none":  # keys of earlier runs (no serialisation stage) stay valid
        key["quantize"] = quantize
    # the sidecars' tau is measured with --ttc-eps (and the base tower with a robust checkpoint)
    key["tau"] = {"eps": ttc_eps, "base_tower": base_tower}


def module_fingerprint(module) -> str:
    """sha256 over a module's state dict (a model passed as an object has no weight files to hash)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


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
