"""Data stage: datasets, class names and the preprocessing every later stage reuses.

    train, val, info = build_datasets("fashion-mnist")
    pre = preprocess_config(info, 32)          # stored in config.json
    tf = build_transform(pre, train=False)     # PIL image -> normalised tensor
"""
from .build import build_datasets
from .info import DatasetInfo, default_img_size, list_datasets
from .seeded import SeededDataset
from .transforms import build_transform, pixel_batch, preprocess_config, sample_pixels, spread_indices

__all__ = ["DatasetInfo", "SeededDataset", "build_datasets", "build_transform", "default_img_size",
           "list_datasets", "pixel_batch", "preprocess_config", "sample_pixels", "spread_indices"]
