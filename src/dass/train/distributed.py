"""Data-parallel helpers: process group set-up under ``torchrun`` and deterministic samplers.

``torchrun --nproc_per_node N -m dass.cli train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
:func:`init_distributed` then starts a process group (``nccl`` on GPU, ``gloo`` on CPU). Without those
variables everything runs in one process and the collective helpers are no-ops.

:class:`EpochSampler` makes the data order a pure function of (seed, epoch): each *global* batch of
``world_size × local_batch`` positions is cut into contiguous per-rank slices, so N processes with
local batch b see exactly the samples one process with batch N·b sees, and a resumed run can skip the
batches already done. With ``weights`` it draws a class-balanced sample with replacement (the same
draw on every rank: a distributed weighted sampler). Every item is yielded as ``(index, sample_seed)``
so augmentation is reproducible too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["DistInfo", "init_distributed", "EpochSampler", "ShardSampler", "all_gather_objects", "barrier"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Start the process group if launched by ``torchrun`` (``WORLD_SIZE`` > 1); gloo on CPU, nccl on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (in rank order); ``[obj]`` without a process group."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def _sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed for the item at ``position`` of ``epoch`` (independent of rank and world size)."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1)


class EpochSampler(Sampler):
    """Yields this rank's ``(index, sample_seed)`` items of one epoch, ``local_batch`` per step.

    Args:
        num_items: dataset size. local_batch: batch per process. rank, world_size: this process.
        seed: base seed. weights: optional ``(num_items,)`` sampling weights (draw with replacement).
        samples_per_epoch: items per epoch (default ``num_items``); rounded down to whole global batches.
    """

    def __init__(self, num_items: int, local_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 weights: np.ndarray | None = None, samples_per_epoch: int | None = None) -> None:
        self.num_items, self.local_batch = num_items, local_batch
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        global_batch = local_batch * world_size
        self.steps_per_epoch = (samples_per_epoch or num_items) // global_batch
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch's order and skip its first ``start_step`` steps (when resuming)."""
        self.epoch, self.start_step = epoch, start_step

    def global_order(self, epoch: int) -> list[int]:
        """The dataset indices of all ranks for ``epoch``, in global batch order."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n = self.steps_per_epoch * self.local_batch * self.world_size
        if self.weights is None:
            order = torch.randperm(self.num_items, generator=g)
            if n > self.num_items:  # more samples than clips: further permutations
                extra = [torch.randperm(self.num_items, generator=g) for _ in range(n // self.num_items)]
                order = torch.cat([order, *extra])
        else:
            order = torch.multinomial(self.weights, n, replacement=True, generator=g)
        return order[:n].tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.global_order(self.epoch)
        global_batch = self.local_batch * self.world_size
        for step in range(self.start_step, self.steps_per_epoch):
            first = step * global_batch + self.rank * self.local_batch
            for position in range(first, first + self.local_batch):
                yield order[position], _sample_seed(self.seed, self.epoch, position)

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.local_batch


class ShardSampler(Sampler):
    """Evaluation: indices ``rank, rank + world, ...`` of ``range(num_items)`` (no padding, no shuffle)."""

    def __init__(self, num_items: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, num_items, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
