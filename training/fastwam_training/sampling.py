"""Deterministic, resumable batch order shared by all processes.

Every epoch is a seeded permutation of the dataset; each optimizer micro-step takes the next
`batch_size * world_size` indices and every process keeps its own slice. The order depends only on
(seed, epoch, position), so a resumed run sees exactly the batches the uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    """Endless stream of per-process batches, starting at micro-batch `start` (counted from 0)."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start = start
        self.shuffle = shuffle
        # Incomplete global batches are dropped so that every process takes the same number of steps.
        self.batches_per_epoch = num_samples // (batch_size * world_size)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{num_samples} samples cannot fill one global batch of {batch_size} x {world_size} processes"
            )

    def __len__(self) -> int:  # one epoch; iteration itself never ends
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        epoch, position = divmod(self.start, self.batches_per_epoch)
        while True:
            order = self.epoch_order(epoch)
            global_size = self.batch_size * self.world_size
            for b in range(position, self.batches_per_epoch):
                first = b * global_size + self.rank * self.batch_size
                yield order[first : first + self.batch_size].tolist()
            epoch, position = epoch + 1, 0

    def epoch_order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator)
