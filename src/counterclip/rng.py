"""Seedable random draws. Every randomised step in counterclip takes ``generator``:

* ``None``: the global RNG (as torchattacks does);
* a ``torch.Generator``: one stream for the whole batch;
* a sequence of ``torch.Generator`` (one per sample, see ``per_sample_generators``): each sample's draws depend
  on that sample alone, so results do not change with batch size, sharding or a resume.

The eval grid passes the sequence. The helpers below take all three; code that calls ``torch.randn(...,
generator=...)`` itself needs one ``torch.Generator``, which ``one_generator`` makes from the sequence (a defense
that does not declare ``per_sample_generators = True`` is handed that one: ``defenses/base.py``).

Draws are made on the CPU and moved to the tensor's device, so a seed means the same noise on every device.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

from .evaluation.sampling import sample_seed

GeneratorLike = Union[None, torch.Generator, Sequence[torch.Generator]]


def per_sample_generators(seed: int, dataset: str, indices, stream: str = "") -> list[torch.Generator]:
    return [torch.Generator().manual_seed(sample_seed(seed, dataset, int(i), stream)) for i in indices]


def _draw(fn, shape, generator: GeneratorLike, device, dtype) -> torch.Tensor:
    if generator is None:
        return fn(shape, device=device, dtype=dtype)
    if isinstance(generator, torch.Generator):
        gdev = generator.device
        out = fn(shape, generator=generator, device=gdev, dtype=dtype)
        return out.to(device)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ValueError(f"{len(gens)} per-sample generators for a batch of {shape[0]}")
    return torch.stack([fn(shape[1:], generator=g, dtype=dtype) for g in gens]).to(device)


def rand(shape, generator: GeneratorLike = None, device="cpu", dtype=torch.float32) -> torch.Tensor:
    return _draw(torch.rand, tuple(shape), generator, device, dtype)


def randn(shape, generator: GeneratorLike = None, device="cpu", dtype=torch.float32) -> torch.Tensor:
    return _draw(torch.randn, tuple(shape), generator, device, dtype)


def uniform_like(x: torch.Tensor, low: float, high: float, generator: GeneratorLike = None) -> torch.Tensor:
    if generator is None:  # torchattacks' draw: uniform_ on a tensor shaped like x, from the global RNG
        return torch.empty_like(x).uniform_(low, high)
    return rand(x.shape, generator, x.device, x.dtype) * (high - low) + low


def subset(generator: GeneratorLike, mask_or_index) -> GeneratorLike:
    """The generators of a sub-batch (per-sample generators follow their samples)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    idx = torch.as_tensor(mask_or_index)
    if idx.dtype == torch.bool:
        idx = idx.nonzero().flatten()
    gens = list(generator)
    return [gens[int(i)] for i in idx]


def one_generator(generator: GeneratorLike, device="cpu") -> torch.Generator | None:
    """One ``torch.Generator`` on ``device`` standing for ``generator``: ``None`` and a single generator pass
    through; per-sample generators seed a new one from one draw of each (so it is seeded by the run's seed, and
    fresh on every call, as EOT needs, since each call advances them). Unlike the per-sample streams, its draws
    depend on which samples share the batch (``--batch-size``, sharding)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    seed = 0
    for g in generator:
        seed ^= int(torch.randint(0, 2**62, (1,), generator=g))
    return torch.Generator(device=device).manual_seed(seed)
