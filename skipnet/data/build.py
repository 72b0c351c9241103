"""build_datasets: name -> (train, val, info), the data stage's one entry point for training."""
from __future__ import annotations

from skipnet.common import UserError

from . import cifar, fashion_mnist, imagefolder
from .info import DatasetInfo, check_name, default_img_size, make_info
from .seeded import SeededDataset
from .transforms import build_transform, preprocess_config


def build_datasets(name: str, data_dir: str | None = None, img_size: int | None = None, download: bool = False,
                   augment: bool = True, seed: int = 0) -> tuple[SeededDataset, SeededDataset, DatasetInfo]:
    """Train and validation sets yielding (normalised float tensor 3 x S x S, int label).

    ``augment=False`` gives the training set the eval transform. The validation split is the
    official test split for Fashion-MNIST and CIFAR, val/ for imagefolder.
    """
    check_name(name)
    size = default_img_size(name) if img_size is None else img_size
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}; pass a non-negative --seed")
    if name == "fashion-mnist":
        train_src, val_src, classes = fashion_mnist.load(data_dir)
    elif name == "imagefolder":
        train_src, val_src, classes = imagefolder.load(data_dir)
    else:
        train_src, val_src, classes = cifar.load(name, data_dir, download)
    info = make_info(name, classes)
    pre = preprocess_config(info, size)
    train = SeededDataset(train_src, build_transform(pre, train=augment, dataset=name), info, seed)
    val = SeededDataset(val_src, build_transform(pre, train=False, dataset=name), info, seed)
    return train, val, info
