"""``counterclip zeroshot``: top-1 zero-shot accuracy of a model on a dataset, one JSON record."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .clip_benchmark import add_benchmark_fields
from .integrity import seal_record
from .metrics import accuracy_metrics
from .sampling import select_indices
from .state import json_plain, stable_hash, write_json


def versions() -> dict:
    import platform

    import open_clip
    import torchvision

    from .. import __version__

    return {"counterclip": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "open_clip": open_clip.__version__, "python": platform.python_version()}


def loader(dataset, indices, batch_size: int, workers: int = 0) -> DataLoader:
    return DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size, shuffle=False, num_workers=workers)


@torch.no_grad()
def zeroshot_accuracy(classifier, dataset, indices, batch_size: int = 256, device="cpu", desc="zeroshot"):
    correct, n = 0, 0
    bar = tqdm(loader(dataset, indices, batch_size), desc=desc, unit="batch", leave=False)
    for x, y in bar:
        pred = classifier(x.to(device)).argmax(-1).cpu()
        correct += int((pred == y).sum())
        n += len(y)
        bar.set_postfix(acc=f"{correct / n:.4f}")
    return correct, n


def run_zeroshot(model_name: str, dataset_name: str, output: str | Path, pretrained=None, vision_checkpoint=None,
                 data_root=None, download=False, limit=None, batch_size=256, device="cpu", seed=0,
                 prompts: str = "clip", allow_partial: bool = False) -> dict:
    from .. import load_model
    from ..data import get_dataset
    from ..zeroshot import ZeroShotClassifier

    t0 = time.time()
    model = load_model(model_name, pretrained=pretrained, device=device, vision_checkpoint=vision_checkpoint)
    data = get_dataset(dataset_name, data_root=data_root, download=download, image_size=model.image_size,
                       prompts=prompts, allow_partial=allow_partial)
    clf = ZeroShotClassifier(model, data.classnames, data.templates)
    idx = select_indices(len(data), limit, seed)
    correct, n = zeroshot_accuracy(clf, data.dataset, idx, batch_size, device, desc=f"{dataset_name}")
    from .keys import SCHEMA_VERSION

    record = {"schema_version": SCHEMA_VERSION, "model": model_name, "pretrained": pretrained, "vision_checkpoint": vision_checkpoint,
              "activation": model.activation, "precision": "fp32",
              "dataset": data.name, "split": data.split, "task": "zeroshot_classification",
              "prompts": data.prompts, "templates": data.templates, "metrics": {**accuracy_metrics("clean", correct, n), "n_samples": n},
              "limit": limit, "seed": seed, "time_s": round(time.time() - t0, 2), "versions": versions(),
              **data.record_fields()}
    add_benchmark_fields(record)
    safe_model = model_name.replace("/", "_").replace(":", "_")
    style = "" if data.prompts == "clip" else f"_{data.prompts}"  # both styles side by side, none overwritten
    path = Path(output) / f"zeroshot_{safe_model}_{data.name.replace('/', '_')}{style}.json"
    key = stable_hash({**{k: record[k] for k in ("model", "pretrained_arg", "vision_checkpoint", "dataset", "split",
                                                 "source", "templates", "limit", "seed")},
                       "classnames": data.classnames}, 32)
    record = seal_record(json_plain(record), key, None)
    write_json(path, record)  # atomic and sealed, like the grid's records
    record["_path"] = str(path)
    return record
