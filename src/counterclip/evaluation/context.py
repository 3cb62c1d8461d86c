"""What every cell of one dataset shares, as one explicit value: the data, the classifier, the selected indices,
this rank's shard, the state folder and its keys, and the per-sample random streams."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..rng import per_sample_generators


@dataclass
class DatasetContext:
    cfg: object  # EvalConfig
    data: object  # a counterclip.data dataset
    clf: object  # ZeroShotClassifier
    indices: torch.Tensor  # the selected samples (--limit, --seed), before sharding
    start: int  # this rank's shard of ``indices``
    end: int
    device: str
    state: Path  # DIR/.state/<dataset>
    base_key: dict  # what every cache key of this dataset shares (keys.base_key)
    dist: object  # evaluation.distributed.Dist
    tau_encoder: object = None  # robust towers: tau from the original tower (spec section 2)
    tau_ttc: object = None  # TTC measuring tau for the sidecars (never used to defend)
    clean: dict = field(default_factory=dict)  # per sample: y, idx, tau of the clean cell

    @property
    def name(self) -> str:
        return self.data.name

    def batch(self, cs: int, ce: int):
        """Images, labels and dataset indices of selected samples ``cs:ce``."""
        idx = self.indices[cs:ce]
        ds = self.data.dataset
        if hasattr(ds, "x"):
            x, y = ds.x[idx], ds.y[idx]
        else:
            items = [ds[int(i)] for i in idx]
            x, y = torch.stack([t[0] for t in items]), torch.tensor([int(t[1]) for t in items])
        return x.to(self.device), y.to(self.device), idx

    def gens(self, idx, stream: str):
        """One generator per sample, keyed by (seed, dataset, sample index, stream): a sample's draws never
        depend on the batch, the shard or a resume."""
        return per_sample_generators(self.cfg.seed, self.data.name, idx.tolist(), stream)

    def autocast(self):
        """fp16-all (the reference code's mode): fp16 autocast around everything the cells compute."""
        if self.cfg.precision != "fp16-all":
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=torch.float16)

    def ranges(self) -> list[tuple[int, int]]:
        bs = self.cfg.batch_size
        return [(cs, min(cs + bs, self.end)) for cs in range(self.start, self.end, bs)]
