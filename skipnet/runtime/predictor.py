"""One predictor over every format: the same preprocessing, labels and top-k for all.

Every backend takes a batch of raw RGB pixels (uint8, N x H x W x 3) and returns float32
logits; the backend alone knows its format's layout and dtype.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from ..common import UserError, read_json
from ..common.contract import Format, Sidecar, parse, sidecar_path
from ..common.io import file_record
from ..data import build_transform, open_image, pixel_batch


class ModelLoadError(UserError):
    """A model file that is missing, corrupt, truncated or not what its extension says."""


class Backend(Protocol):
    format: str
    precision: str
    config: dict[str, Any]
    input_side: int | None  # the image side the model file takes (None: any)
    num_outputs: int | None  # its number of logits (None: not known before running it)

    def logits(self, pixels: np.ndarray) -> np.ndarray: ...


ImageLike = str | os.PathLike | Image.Image | np.ndarray


@dataclass(frozen=True)
class Prediction:
    labels: list[str]
    probs: list[float]
    indices: list[int]

    @property
    def top1(self) -> str:
        return self.labels[0]


class Predictor:
    """``predict(images)`` for PIL images, file paths or uint8 HxWxC arrays -> top-k labels and probabilities."""

    def __init__(self, backend: Backend, config: dict[str, Any]):
        self.backend = backend
        self.config = config
        self.labels: list[str] = list(config["class_names"])
        self.preprocess: dict[str, Any] = config["preprocess"]
        self._transform = build_transform(self.preprocess, train=False, normalize=False)

    @property
    def format(self) -> str:
        return self.backend.format

    @property
    def precision(self) -> str:
        return self.backend.precision

    def prepare(self, images: Iterable[ImageLike]) -> np.ndarray:
        """Images -> uint8 N x S x S x 3 raw pixels, with the model's own resize/crop/colour handling."""
        images = [_open(img) for img in images]
        if not images:
            raise UserError("no images given")
        return pixel_batch(self._transform, images)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        return self.backend.logits(pixels)

    def predict(self, images: ImageLike | Sequence[ImageLike], top_k: int = 5) -> list[Prediction]:
        if isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim <= 3):
            images = [images]
        probs = torch.softmax(torch.from_numpy(self.logits(self.prepare(images))).float(), dim=1)
        k = min(top_k, probs.shape[1])
        p, idx = probs.topk(k, dim=1)
        return [
            Prediction([self.labels[i] for i in row_i], row_p, row_i) for row_p, row_i in zip(p.tolist(), idx.tolist())
        ]


def _open(img: ImageLike) -> Image.Image | np.ndarray:
    return img if isinstance(img, (Image.Image, np.ndarray)) else open_image(img)


def model_config(path: Path, fmt: Format) -> dict[str, Any] | None:
    """The metadata of an exported model: its sidecar, checked against the schema and against the
    file itself; None when there is no sidecar (the backend may find metadata embedded in the file)."""
    if not fmt.exported:
        return None
    side = sidecar_path(path)
    if not side.exists():
        return None
    fix = "re-export the model with skipnet-export"
    data = read_json(side, fix)
    parse(Sidecar, data, str(side), fix)
    record = file_record(path)
    if (record["bytes"], record["sha256"]) != (data["file"]["bytes"], data["file"]["sha256"]):
        raise ModelLoadError(
            f"{side} describes another file than {path} (its size or sha256 differs: the model "
            f"was replaced or an export was interrupted); {fix}"
        )
    return data


def check_fits(path: Path, backend: Backend) -> None:
    """Refuse a model whose input size or number of outputs does not fit its metadata."""
    config = backend.config
    crop, labels = config["preprocess"]["crop"], config["class_names"]
    side, outputs = backend.input_side, backend.num_outputs
    if side is not None and side != crop:
        raise ModelLoadError(
            f"{path} takes {side}x{side} images but its metadata says {crop}x{crop}; "
            "re-export it, or pass the metadata that belongs to it"
        )
    if outputs is not None and outputs != len(labels):
        raise ModelLoadError(
            f"{path} has {outputs} outputs but its metadata names {len(labels)} classes; "
            "re-export it, or pass the metadata that belongs to it"
        )
