"""Tensors out of a TorchScript archive (OpenAI's ``ViT-B-32.pt``) without running any of it.

``torch.jit.load`` compiles and instantiates the archive's TorchScript code; ``torch.load(weights_only=True)``
refuses TorchScript archives. Neither is acceptable for a file from the internet, so this reads the zip
directly: ``data.pkl`` with an unpickler that knows a handful of names (tensor rebuilding, storages,
``OrderedDict``, TorchScript's typed-list helpers) and turns every scripted module class (``__torch__.*``)
into an inert attribute holder; any other global is refused. Tensors come from the ``data/<key>`` records.
The archive's ``code/`` is never read.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import CounterclipError

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
# OpenAI's archives carry these as attributes; they are model hyper-parameters, not weights
NON_WEIGHTS = ("input_resolution", "context_length", "vocab_size")


def _data_pkl(names: list[str]) -> str | None:
    hits = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    return hits[0] if hits else None


def is_torchscript_archive(path) -> bool:
    """A zip with ``<prefix>/constants.pkl`` and ``<prefix>/data.pkl`` (torch's own test for TorchScript)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return _data_pkl(names) is not None and any(n.endswith("/constants.pkl") for n in names)


class _Scripted:
    """Stands in for a scripted module class: holds the attribute dict its BUILD carries, runs nothing."""

    qualname = ""

    def __setstate__(self, state):
        self.state = state


class _Dtype:
    def __init__(self, dtype):
        self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride, *_):
    return storage.as_strided(tuple(size), tuple(stride), offset).clone()


def _typed_list(items, *_):
    return list(items)


def _untag(value, *_):
    return value


class _ArchiveUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str):
        import io

        super().__init__(io.BytesIO(data))
        self.zf, self.prefix, self._storages = zf, prefix, {}
        self.classes: set[str] = set()

    def find_class(self, module, name):
        if module.startswith("__torch__"):
            self.classes.add(f"{module}.{name}")
            return type(name, (_Scripted,), {"qualname": f"{module}.{name}"})
        if module == "torch" and name in _STORAGE_DTYPES:
            return _Dtype(_STORAGE_DTYPES[name])
        allowed = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor, ("collections", "OrderedDict"): dict,
                   ("torch.jit._pickle", "build_intlist"): _typed_list,
                   ("torch.jit._pickle", "build_doublelist"): _typed_list,
                   ("torch.jit._pickle", "build_boollist"): _typed_list,
                   ("torch.jit._pickle", "build_tensorlist"): _typed_list,
                   ("torch.jit._pickle", "restore_type_tag"): _untag}
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel = pid
        if kind != "storage" or not isinstance(dtype, _Dtype):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if key not in self._storages:
            raw = self.zf.read(f"{self.prefix}data/{key}")
            flat = torch.frombuffer(bytearray(raw), dtype=dtype.dtype) if raw else torch.empty(0, dtype=dtype.dtype)
            self._storages[key] = flat[:numel]
        return self._storages[key]


def _flatten(obj, prefix: str, out: dict) -> None:
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        return
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _Scripted):
            _flatten(value, f"{prefix}{name}.", out)


def read_torchscript_state_dict(path) -> tuple[dict[str, torch.Tensor], set[str]]:
    """``(state dict, scripted class names)`` of a TorchScript archive, read as data (see module docstring)."""
    try:
        with zipfile.ZipFile(path) as z:
            pkl = _data_pkl(z.namelist())
            if pkl is None:
                raise CounterclipError(f"{path}: not a TorchScript archive (no data.pkl)")
            unpickler = _ArchiveUnpickler(z.read(pkl), z, pkl[: -len("data.pkl")])
            root = unpickler.load()
    except CounterclipError:
        raise
    except Exception as e:
        raise CounterclipError(
            f"cannot read the TorchScript archive {path} as data ({type(e).__name__}: {e}); convert it once on a "
            "trusted machine: python -c \"import torch; m = torch.jit.load('IN.pt', map_location='cpu'); "
            "torch.save(m.state_dict(), 'OUT.pt')\" and pass OUT.pt") from None
    sd: dict[str, torch.Tensor] = {}
    _flatten(root, "", sd)
    for k in NON_WEIGHTS:
        sd.pop(k, None)
    if not sd:
        raise CounterclipError(f"{path}: the TorchScript archive holds no tensors")
    return sd, unpickler.classes


def uses_quick_gelu(classes: set[str]) -> bool:
    return any(c.rsplit(".", 1)[-1] == "QuickGELU" for c in classes)
