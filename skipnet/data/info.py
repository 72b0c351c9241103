"""The dataset table (every per-dataset fact, in one place) and the DatasetInfo record handed to later stages.

Adding a dataset means adding one DatasetSpec row here (and its loader module); every stage and
CLI reads names, statistics, sizes, recipes and titles from this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from skipnet.common import UserError

from . import cifar, fashion_mnist, imagefolder

if TYPE_CHECKING:
    from .source import Source

RGB = tuple[float, float, float]
# (data_dir, download) -> (train source, val source, class names)
Loader = Callable[[Any, bool], "tuple[Source, Source, list[str]]"]
AUGMENT_STYLES = ("imagenet", "pad-crop")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything SkipNet knows about one dataset."""

    name: str  # the --data value
    title: str  # display name in reports
    mean: RGB
    std: RGB
    img_size: int  # default input side
    grayscale: bool  # images are gray and get replicated to 3 channels
    augment: str  # "imagenet": random resized crop + flip; "pad-crop": pad 1/8, random crop + flip
    eval_crop: float  # eval resizes to img_size / eval_crop, then centre-crops img_size
    load: Loader
    recipe: str  # the default training recipe (skipnet.training.RECIPES)
    train_images: int | None  # size of the training split where it is fixed
    needs_data_dir: bool  # no default location: --data-dir is required
    data_dir_holds: str  # what --data-dir points at, for messages

    def __post_init__(self) -> None:  # a typo in a new row would otherwise silently pick pad-crop
        if self.augment not in AUGMENT_STYLES or not 0 < self.eval_crop <= 1:
            raise ValueError(f"dataset {self.name}: augment must be one of {AUGMENT_STYLES} and 0 < eval_crop <= 1")


_TABLE = (
    DatasetSpec(
        "fashion-mnist",
        "Fashion-MNIST",
        (0.2860,) * 3,
        (0.3530,) * 3,
        32,
        grayscale=True,
        augment="pad-crop",
        eval_crop=1.0,
        # no download flag: the files are fetched as a last resort anyway
        load=lambda data_dir, download: fashion_mnist.load(data_dir),
        recipe="fast",
        train_images=60000,
        needs_data_dir=False,
        data_dir_holds="the four Fashion-MNIST idx files",
    ),
    DatasetSpec(
        "cifar10",
        "CIFAR-10",
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        32,
        grayscale=False,
        augment="pad-crop",
        eval_crop=1.0,
        load=partial(cifar.load, "cifar10"),
        recipe="paper",
        train_images=50000,
        needs_data_dir=False,
        data_dir_holds="an extracted CIFAR-10 archive",
    ),
    DatasetSpec(
        "cifar100",
        "CIFAR-100",
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        32,
        grayscale=False,
        augment="pad-crop",
        eval_crop=1.0,
        load=partial(cifar.load, "cifar100"),
        recipe="paper",
        train_images=50000,
        needs_data_dir=False,
        data_dir_holds="an extracted CIFAR-100 archive",
    ),
    # A user's own photos: ImageNet statistics and ImageNet-style crops (eval: resize to 1/0.875, centre crop).
    DatasetSpec(
        "imagefolder",
        "image folders",
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        224,
        grayscale=False,
        augment="imagenet",
        eval_crop=0.875,
        load=lambda data_dir, download: imagefolder.load(data_dir),  # nothing to download
        recipe="finetune",
        train_images=None,
        needs_data_dir=True,
        data_dir_holds="train/ and val/ class folders",
    ),
)
_SPECS: dict[str, DatasetSpec] = {s.name: s for s in _TABLE}


@dataclass(frozen=True)
class DatasetInfo:
    """What a model trained on a dataset needs to know about it (stored in every run's config.json)."""

    name: str
    class_names: list[str]
    mean: RGB
    std: RGB
    grayscale: bool  # images are gray and get replicated to 3 channels

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def list_datasets() -> list[str]:
    return list(_SPECS)


def dataset_spec(name: str) -> DatasetSpec:
    """The table's row for ``name``; UserError naming the choices if there is none."""
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(_SPECS)}") from None


def check_name(name: str) -> str:
    return dataset_spec(name).name


def default_img_size(name: str) -> int:
    return dataset_spec(name).img_size


def make_info(name: str, class_names: list[str]) -> DatasetInfo:
    spec = dataset_spec(name)
    return DatasetInfo(name, list(class_names), spec.mean, spec.std, spec.grayscale)
