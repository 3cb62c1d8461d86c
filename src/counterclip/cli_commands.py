"""Commands added by later layers (demo, eval, report) register here, keeping cli.py thin."""

from __future__ import annotations


def register(sub, add_model_args, add_data_args) -> None:
    pass
