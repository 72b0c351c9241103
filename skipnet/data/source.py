"""Image sources: what a dataset reader returns (Source), and the in-memory one of the small datasets
(Fashion-MNIST, CIFAR), uint8 pixels kept in one array (ArraySource)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Source(Protocol):
    """A base dataset: (PIL image or uint8 array, label) pairs plus their labels."""

    targets: Sequence[int]

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> tuple[Any, int]: ...


class ArraySource:
    """Indexable (uint8 HxW or HxWx3 array, label) pairs over an N-image array."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        assert images.dtype == np.uint8 and images.ndim in (3, 4) and len(images) == len(labels)
        self.images = images
        self.targets: list[int] = [int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], self.targets[index]
