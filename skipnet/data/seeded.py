"""Augmentation as a pure function of (seed, epoch, index).

Training must resume bit-identically mid-epoch and give the same batches with any number of
DataLoader workers, so an item's random augmentation may not depend on whichever worker's RNG
happens to produce it: each item reseeds torch's CPU generator from (seed, epoch, index) inside
a forked RNG scope, leaving the caller's RNG state untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .info import DatasetInfo
from .source import Source


class SeededDataset(Dataset):
    """``source`` items passed through ``transform``, with per-item seeded randomness.

    Call ``set_epoch(e)`` before iterating epoch ``e`` (and before the DataLoader starts its
    workers: persistent workers keep the epoch they were started with).
    """

    def __init__(
        self, source: Source, transform: Callable[[Any], torch.Tensor], info: DatasetInfo, seed: int = 0
    ) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.source = source
        self.transform = transform
        self.info = info
        self.seed = int(seed)
        self.epoch = 0

    @property
    def targets(self) -> Sequence[int]:
        return self.source.targets

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def item_seed(self, index: int) -> int:
        """The 64-bit seed of item ``index`` in the current epoch (well mixed, unlike seed + index)."""
        entropy = [self.seed, self.epoch, index]
        return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = range(len(self))[index]  # normalises negative indices, raises IndexError out of range
        img, label = self.source[index]
        with torch.random.fork_rng(devices=[]):
            # Seed only the CPU generator: torch.manual_seed would also reseed CUDA/MPS, outside the fork.
            torch.default_generator.manual_seed(self.item_seed(index))
            x = self.transform(img)
        return x, int(label)
