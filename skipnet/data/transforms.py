"""Preprocessing: the stored "preprocess" description and the one function that turns it into a transform.

``build_transform(preprocess, train=False)`` is the only implementation of eval-time
preprocessing; training, export calibration and the runtime all feed models through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from skipnet.common import UserError
from skipnet.common.contract import RESIZE_INTERPOLATION

from .info import DatasetInfo, dataset_spec

Transform = Callable[[Image.Image | np.ndarray], torch.Tensor]

_KEYS = ("img_size", "resize", "crop", "grayscale_to_rgb", "mean", "std")


def preprocess_config(info: DatasetInfo, img_size: int) -> dict[str, Any]:
    """The JSON-serialisable "preprocess" section of config.json: everything needed to feed a trained model."""
    if not isinstance(img_size, int) or isinstance(img_size, bool) or img_size < 1:
        raise UserError(f"image size must be a positive integer, got {img_size}; pass e.g. --img-size 32")
    resize = round(img_size / dataset_spec(info.name).eval_crop)  # eval_crop 1.0: the image is used whole
    return {
        "img_size": int(img_size),
        "resize": int(resize),
        "crop": int(img_size),
        "grayscale_to_rgb": bool(info.grayscale),
        "mean": [float(m) for m in info.mean],
        "std": [float(s) for s in info.std],
    }


class ToRGB:
    """PIL image of any mode, or a uint8 HxW / HxWx3 array -> 3-channel RGB PIL image.

    With ``grayscale_to_rgb`` the image is first reduced to gray, so a colour photo fed to a
    Fashion-MNIST model looks like its training data (gray replicated to R=G=B).
    """

    def __init__(self, grayscale_to_rgb: bool) -> None:
        self.grayscale_to_rgb = grayscale_to_rgb

    def __call__(self, img: Image.Image | np.ndarray) -> Image.Image:
        if isinstance(img, np.ndarray):
            if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
                raise TypeError(f"expected a uint8 HxW or HxWx3 array, got {img.dtype} {img.shape}")
            img = Image.fromarray(img)
        if img.mode.startswith("I;16"):  # 16-bit gray (e.g. PNG): PIL's convert would clip at 255, not scale
            img = Image.fromarray((np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8))
        if self.grayscale_to_rgb:
            return img.convert("L").convert("RGB")
        return img.convert("RGB")

    def __repr__(self) -> str:
        return f"ToRGB(grayscale_to_rgb={self.grayscale_to_rgb})"


def build_transform(
    preprocess: dict[str, Any], train: bool, dataset: str | None = None, normalize: bool = True
) -> Transform:
    """Callable: PIL image (any mode) or uint8 array -> normalised float tensor 3 x crop x crop.

    ``normalize=False`` stops before scaling: a uint8 tensor of raw RGB pixels, what exported
    models take (they normalise inside).

    ``train=True`` adds the dataset's augmentation (its ``augment`` in the dataset table): random
    resized crop ("imagenet") or pad-and-random-crop ("pad-crop"). Without ``dataset`` the style
    follows the preprocess section (a resize larger than the crop means ImageNet-style).
    """
    p = _checked(preprocess)
    interpolation = InterpolationMode(RESIZE_INTERPOLATION)
    resize = v2.Resize(p["resize"], interpolation=interpolation, antialias=True)
    steps: list[Callable] = [ToRGB(p["grayscale_to_rgb"])]
    if not train:
        steps += [resize, v2.CenterCrop(p["crop"])]
    elif _imagenet_style(p, dataset):
        steps += [
            v2.RandomResizedCrop(p["crop"], interpolation=interpolation, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    else:
        steps += [resize, v2.RandomCrop(p["crop"], padding=p["crop"] // 8), v2.RandomHorizontalFlip()]
    steps.append(v2.PILToTensor())
    if normalize:
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(p["mean"], p["std"])]
    return v2.Compose(steps)


def pixel_batch(transform: Transform, images) -> np.ndarray:
    """Images through a ``normalize=False`` transform -> one uint8 N x S x S x 3 array (the exported models' input)."""
    return torch.stack([transform(img) for img in images]).permute(0, 2, 3, 1).contiguous().numpy()


def spread_indices(total: int, n: int) -> list[int]:
    """``min(n, total)`` indices spread evenly over ``total`` items (every k-th), so a subset of a
    split still covers every class."""
    n = min(n, total)
    return [i * total // n for i in range(n)]


def sample_pixels(source, preprocess: dict[str, Any], n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` evenly spread (image, label) items of ``source`` as raw uint8 NHWC pixels, prepared with
    ``preprocess``, and their labels: calibration and parity images."""
    tf = build_transform(preprocess, train=False, normalize=False)
    idx = spread_indices(len(source), n)
    return pixel_batch(tf, [source[i][0] for i in idx]), np.asarray([int(source[i][1]) for i in idx])


def _imagenet_style(p: dict[str, Any], dataset: str | None) -> bool:
    if dataset is None:
        return p["resize"] != p["crop"]
    return dataset_spec(dataset).augment == "imagenet"


def _checked(p: dict[str, Any]) -> dict[str, Any]:
    """Validate a preprocess section (it may come from a user-edited config.json)."""
    fix = 're-create config.json with skipnet-train or restore its "preprocess" section'
    if not isinstance(p, dict):
        raise UserError(f"preprocess section must be a JSON object, got {type(p).__name__}; {fix}")
    missing = [k for k in _KEYS if k not in p]
    if missing:
        raise UserError(f"preprocess section lacks {', '.join(missing)}; {fix}")
    for k in ("img_size", "resize", "crop"):
        if not isinstance(p[k], int) or isinstance(p[k], bool) or p[k] < 1:
            raise UserError(f"preprocess {k} must be a positive integer, got {p[k]!r}; {fix}")
    for k in ("mean", "std"):
        v = p[k]
        if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
            raise UserError(f"preprocess {k} must be a list of 3 numbers, got {v!r}; {fix}")
    if not isinstance(p["grayscale_to_rgb"], bool):
        raise UserError(f"preprocess grayscale_to_rgb must be true or false, got {p['grayscale_to_rgb']!r}; {fix}")
    if any(s <= 0 for s in p["std"]):
        raise UserError(f"preprocess std must be positive, got {p['std']!r}; {fix}")
    return p
