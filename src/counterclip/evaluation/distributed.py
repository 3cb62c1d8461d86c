"""torch.distributed sharding: ``torchrun --nproc-per-node K -m counterclip eval ...`` splits every dataset's
selected samples into K contiguous shards (no sample dropped or duplicated) and gathers per-sample results to
rank 0, so the numbers equal a single-process run. gloo on CPU, NCCL on GPUs; multi-node the torchrun way."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


class Dist:
    def __init__(self, device: str = "cpu"):
        self.enabled = "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
        self.rank, self.world = 0, 1
        self.device = device
        if self.enabled:
            if not dist.is_initialized():
                backend = "nccl" if str(device).startswith("cuda") and torch.cuda.is_available() else "gloo"
                dist.init_process_group(backend=backend)
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            if str(device).startswith("cuda") and torch.cuda.is_available():
                self.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
                torch.cuda.set_device(self.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous [start, end) of n positions."""
        return (n * self.rank) // self.world, (n * (self.rank + 1)) // self.world

    def gather(self, obj):
        """Every rank's object, in rank order, on every rank (None-free list)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
