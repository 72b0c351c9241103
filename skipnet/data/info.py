"""Dataset names, per-dataset constants and the DatasetInfo record handed to later stages."""
from __future__ import annotations

from dataclasses import dataclass

from skipnet.common import UserError

RGB = tuple[float, float, float]


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


@dataclass(frozen=True)
class _Spec:
    mean: RGB
    std: RGB
    img_size: int
    grayscale: bool = False


_SPECS: dict[str, _Spec] = {
    "fashion-mnist": _Spec((0.2860,) * 3, (0.3530,) * 3, 32, grayscale=True),
    "cifar10": _Spec((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 32),
    "cifar100": _Spec((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 32),
    "imagefolder": _Spec((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224),  # ImageNet statistics
}


def list_datasets() -> list[str]:
    return list(_SPECS)


def check_name(name: str) -> str:
    if name not in _SPECS:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(_SPECS)}")
    return name


def default_img_size(name: str) -> int:
    return _SPECS[check_name(name)].img_size


def make_info(name: str, class_names: list[str]) -> DatasetInfo:
    spec = _SPECS[check_name(name)]
    return DatasetInfo(name, list(class_names), spec.mean, spec.std, spec.grayscale)
