"""What a fine-tuning run trains and selects on: a class subset (``--classes 0-4``), a held-out part of the training
split (``--select heldout`` and the lr calibration read it; downstream test sets never are): the dataset's packaged
list where it has one (Tiny ImageNet: TTC's ``eval_files``, ``data/heldout.py``), else a seeded 10 % per class;
``--limit`` training images, and the epoch's batches: a ``DistributedSampler`` (shuffled, seeded, drop_last)
whose order depends on (seed, epoch) only, cut into per-rank batches of global/world images."""

from __future__ import annotations

import hashlib
import os

import torch

from ..errors import CounterclipError
from ..evaluation.sampling import select_indices

HELDOUT_FRACTION = 0.1


def index_list(text) -> list[int]:
    """``"0-4"``, ``"0,2,7"`` or ``"0-2,5"`` -> those indices, in the given order; ValueError when malformed."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = (int(v) for v in part.split("-", 1))
            out += list(range(lo, hi + 1))
        elif part:
            out.append(int(part))
    return out


def parse_classes(spec, num_classes: int) -> list[int]:
    """``None``/``"all"`` -> every class; ``"0-4"``, ``"0,2,7"`` or ``"0-2,5"`` -> those class indices."""
    if spec is None or str(spec).strip().lower() == "all":
        return list(range(num_classes))
    try:
        out = index_list(spec)
    except ValueError:
        raise CounterclipError(f"--classes {spec!r}: use class indices such as 0-4 or 0,2,7") from None
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad or not out:
        raise CounterclipError(f"--classes {spec!r} lies outside the dataset's classes 0-{num_classes - 1}")
    return sorted(set(out))


def labels_of(dataset) -> torch.Tensor:
    """Every sample's label without decoding images where the dataset exposes them."""
    for attr in ("y", "targets", "_labels", "labels"):
        v = getattr(dataset, attr, None)
        if v is not None and len(v) == len(dataset):
            return torch.as_tensor(v, dtype=torch.long)
    samples = getattr(dataset, "samples", None)
    if samples is not None and len(samples) == len(dataset):
        return torch.as_tensor([s[1] for s in samples], dtype=torch.long)
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def file_names(dataset) -> list[str] | None:
    """Every sample's file base name where the dataset keeps its file paths (``ImageFolder.samples``)."""
    samples = getattr(dataset, "samples", None)
    if samples is None or len(samples) != len(dataset):
        return None
    out = []
    for s in samples:
        path = s[0] if isinstance(s, (tuple, list)) else getattr(s, "path", None)
        if path is None:
            return None
        out.append(os.path.basename(str(path)))
    return out


def listed_mask(dataset, files: frozenset[str], where: str) -> torch.Tensor:
    """Which samples of ``dataset`` are in the held-out list ``files`` (base names)."""
    names = file_names(dataset)
    if names is None:
        raise CounterclipError(f"{where}: the dataset does not expose its file names, so the packaged held-out "
                               "list cannot be applied (use the torchvision/ImageFolder layout)")
    mask = torch.as_tensor([n in files for n in names], dtype=torch.bool)
    if not bool(mask.any()):
        raise CounterclipError(f"{where}: none of the {len(files)} held-out files it lists is among the "
                               f"{len(names)} training images; is this that dataset's train split?")
    return mask


def split(labels: torch.Tensor, classes: list[int], seed: int, limit: int | None = None,
          listed: torch.Tensor | None = None):
    """``(train, heldout)`` dataset indices (sorted) over ``classes``: the samples ``listed`` (a per-sample bool
    mask, the packaged held-out list) held out where given, else a seeded 10 % of each class."""
    train, held = [], []
    for c in classes:
        idx = (labels == c).nonzero().flatten()
        if len(idx) == 0:
            continue
        if listed is not None:
            out = listed[idx]
            if not bool(out.any()):
                raise CounterclipError(f"class {c} has none of its images in the held-out list; the list and "
                                       "the data on disk do not match")
            held.append(idx[out])
            train.append(idx[~out])
            continue
        g = torch.Generator().manual_seed(seed * 1000003 + c)
        perm = idx[torch.randperm(len(idx), generator=g)]
        k = max(1, round(HELDOUT_FRACTION * len(idx))) if len(idx) > 1 else 0
        held.append(perm[:k])
        train.append(perm[k:])
    train_idx = torch.cat(train).sort().values if train else torch.empty(0, dtype=torch.long)
    held_idx = torch.cat(held).sort().values if held else torch.empty(0, dtype=torch.long)
    if limit is not None:
        train_idx = train_idx[select_indices(len(train_idx), limit, seed)]
    return train_idx, held_idx


def content_hash(indices: torch.Tensor) -> str:
    return hashlib.sha256(",".join(map(str, indices.tolist())).encode()).hexdigest()[:16]


def epoch_batches(train_idx: torch.Tensor, epoch: int, seed: int, batch: int, rank: int, world: int) -> list:
    """This rank's batches of dataset indices for ``epoch``: batch j of every rank together is the global
    batch j of a single process (the sampler deals positions round-robin)."""
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(range(len(train_idx)), num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                 drop_last=True)
    sampler.set_epoch(epoch)
    order = train_idx[torch.as_tensor(list(sampler), dtype=torch.long)]
    per_rank = batch // world
    return [order[i * per_rank:(i + 1) * per_rank] for i in range(len(order) // per_rank)]


def load_batch(dataset, indices: torch.Tensor, class_map: dict[int, int]):
    """Images and labels (remapped to positions in the trained class list) of ``indices``."""
    xs = getattr(dataset, "x", None)
    if xs is not None and getattr(dataset, "y", None) is not None:
        x, y = xs[indices], dataset.y[indices]
    else:
        items = [dataset[int(i)] for i in indices]
        x = torch.stack([it[0] for it in items])
        y = torch.as_tensor([int(it[1]) for it in items])
    return x, torch.as_tensor([class_map[int(v)] for v in y], dtype=torch.long)
