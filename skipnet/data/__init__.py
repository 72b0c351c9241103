"""Data stage: datasets, class names and the preprocessing every later stage reuses.

    train, val, info = build_datasets("fashion-mnist")
    pre = preprocess_config(info, 32)          # stored in config.json
    tf = build_transform(pre, train=False)     # PIL image -> normalised tensor

Names are imported lazily, so that reading the dataset table (list_datasets, dataset_spec), as
every CLI does to write its --help, does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DatasetInfo": "info",
    "DatasetSpec": "info",
    "dataset_spec": "info",
    "default_img_size": "info",
    "list_datasets": "info",
    "MAX_IMAGE_PIXELS": "images",
    "check_image": "images",
    "open_image": "images",
    "ImageScan": "imagefolder",
    "check_images": "imagefolder",
    "SeededDataset": "seeded",
    "build_datasets": "build",
    "build_transform": "transforms",
    "pixel_batch": "transforms",
    "preprocess_config": "transforms",
    "sample_pixels": "transforms",
    "spread_indices": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
