"""One predictor over every format: the same preprocessing, labels and top-k for all.

Every backend takes a batch of raw RGB pixels (uint8, N x H x W x 3) and returns float32
logits; the backend alone knows its format's layout and dtype.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from ..common import UserError
from ..data import build_transform, pixel_batch


class ModelLoadError(UserError):
    """A model file that is missing, corrupt, truncated or not what its extension says."""


class Backend(Protocol):
    format: str
    precision: str

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
        self.labels: list[str] = list(config.get("class_names") or [str(i) for i in range(config["num_classes"])])
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
        return [Prediction([self.labels[i] for i in row_i], row_p, row_i)
                for row_p, row_i in zip(p.tolist(), idx.tolist())]


def _open(img: ImageLike) -> Image.Image | np.ndarray:
    if isinstance(img, (Image.Image, np.ndarray)):
        return img
    path = Path(img)
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist; check the path") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path} is not a readable image ({e}); pass a PNG or JPEG file") from None


def sidecar_path(model_path: Path) -> Path:
    """``NAME.EXT.json`` beside ``NAME.EXT``: NAME.tflite and NAME.onnx of one run must not share a sidecar."""
    return model_path.with_name(model_path.name + ".json")


def read_sidecar(model_path: Path) -> dict[str, Any] | None:
    """The sidecar written beside an exported model, if present."""
    side = sidecar_path(model_path)
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{side} is not valid JSON ({e}); re-export the model") from None
