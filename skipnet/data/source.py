"""In-memory image source for the small datasets (Fashion-MNIST, CIFAR): uint8 pixels kept in one array."""
from __future__ import annotations

import numpy as np


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
