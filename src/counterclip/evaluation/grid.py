"""The grid's former home: ``GridRunner`` lives in ``runner.py`` (plan -> execute -> record), cache keys and
record paths in ``keys.py``. Kept so ``from counterclip.evaluation.grid import GridRunner`` goes on working."""

from .keys import module_fingerprint, path_name, weights_fingerprint
from .runner import GridRunner

__all__ = ["GridRunner", "module_fingerprint", "path_name", "weights_fingerprint"]
