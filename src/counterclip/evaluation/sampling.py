"""Which samples a run uses. ``--limit`` picks them with the seed before any sharding or batching, so a
number never depends on batch size, process count or a resume."""

from __future__ import annotations

import hashlib

import torch


def select_indices(n: int, limit: int | None, seed: int = 0) -> torch.Tensor:
    if limit is None or limit >= n:
        return torch.arange(n)
    if limit <= 0:
        raise ValueError(f"--limit must be positive, got {limit}")
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:limit].sort().values


def sample_seed(seed: int, dataset: str, index: int, stream: str = "") -> int:
    """A 63-bit seed for one sample's random draws, derived from (seed, dataset, sample index, stream)."""
    h = hashlib.blake2b(f"{seed}|{dataset}|{index}|{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)
