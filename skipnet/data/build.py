"""build_datasets: name -> (train, val, info), the data stage's one entry point for training."""

from __future__ import annotations

from skipnet.common import UserError

from .info import DatasetInfo, dataset_spec, make_info
from .seeded import SeededDataset
from .transforms import build_transform, preprocess_config


def build_datasets(
    name: str,
    data_dir: str | None = None,
    img_size: int | None = None,
    download: bool = False,
    augment: bool = True,
    seed: int = 0,
) -> tuple[SeededDataset, SeededDataset, DatasetInfo]:
    """Train and validation sets yielding (normalised float tensor 3 x S x S, int label).

    ``augment=False`` gives the training set the eval transform. The validation split is the
    official test split for Fashion-MNIST and CIFAR, val/ for imagefolder.
    """
    spec = dataset_spec(name)
    size = spec.img_size if img_size is None else img_size
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}; pass a non-negative --seed")
    train_src, val_src, classes = spec.load(data_dir, download)
    info = make_info(name, classes)
    pre = preprocess_config(info, size)
    train = SeededDataset(train_src, build_transform(pre, train=augment, dataset=name), info, seed)
    val = SeededDataset(val_src, build_transform(pre, train=False, dataset=name), info, seed)
    return train, val, info
