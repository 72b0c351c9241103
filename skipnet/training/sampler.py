"""A sampler that can start mid-epoch and shards global batches across processes.

Global batch b of an epoch is the same set of samples whatever the number of
processes: process r of w takes the r-th slice of it. Together with per-sample
seeded augmentation (skipnet.data.SeededDataset) this makes a resumed run see
exactly the samples, in the same order, that an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    def __init__(
        self,
        indices: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ):
        self.indices = torch.as_tensor(list(indices), dtype=torch.long)
        self.batch_size = batch_size  # global batch
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    @property
    def batches_per_epoch(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return self.indices
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return self.indices[torch.randperm(len(self.indices), generator=g)]

    def _slice(self, b: int) -> tuple[int, int]:
        lo = b * self.batch_size
        hi = min(lo + self.batch_size, len(self.indices))
        per = -(-(hi - lo) // self.world_size)
        return lo + self.rank * per, min(lo + (self.rank + 1) * per, hi)

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        for b in range(self.start_batch, self.batches_per_epoch):
            lo, hi = self._slice(b)
            yield from order[lo:hi].tolist()

    def __len__(self) -> int:
        return sum(max(0, hi - lo) for lo, hi in map(self._slice, range(self.start_batch, self.batches_per_epoch)))
