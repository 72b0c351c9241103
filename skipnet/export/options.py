"""What an export is asked to do (ExportOptions) and what an exporter is handed (ExportJob)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import nn

from ..common import UserError
from ..common.contract import DYNAMIC_BATCH, QAT_LR, Format, batch_size
from ..models import PixelModel


@dataclass(frozen=True)
class ExportOptions:
    """skipnet-export's flags, as one object. ``int8``/``qat_epochs`` pick the int8 variants of a backend
    name (``export(run, "tflite", int8=True)``); a full format name (``"tflite-int8"``) says it alone."""

    int8: bool = False
    img_size: int | None = None  # default: the training size
    verify: bool = True
    verify_samples: int = 256
    calibration_samples: int = 256
    data_dir: str | None = None  # default: the run's
    batch: int | str | None = None  # ONNX: a fixed batch size or "dynamic" (any); None: the format's own (1)
    qat_epochs: int = 0
    qat_limit: int | None = None  # training images per QAT epoch (default: all)
    qat_lr: float = QAT_LR  # QAT's initial learning rate (Adam, cosine decay)
    full_integer: bool = False  # int8 TFLite: no float prefix (tflite_convert.deployed_float_graph)

    def check(self) -> ExportOptions:
        for flag, value, low in [
            ("--verify-samples", self.verify_samples, 1),
            ("--calibration-samples", self.calibration_samples, 1),
            ("--qat-epochs", self.qat_epochs, 0),
            ("--img-size", self.img_size, 1),
            ("--qat-limit", self.qat_limit, 1),
        ]:
            if value is None and flag in ("--img-size", "--qat-limit"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"{flag} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.full_integer, bool):
            raise UserError(f"full_integer must be True or False, got {self.full_integer!r}")
        if isinstance(self.qat_lr, bool) or not isinstance(self.qat_lr, (int, float)) or not 0 < self.qat_lr <= 1:
            raise UserError(f"--qat-lr must be a number in (0, 1], got {self.qat_lr!r}")
        if self.batch is None:
            return self
        try:
            return replace(self, batch=batch_size(self.batch))
        except ValueError as e:
            raise UserError(f"--batch {e}, got {self.batch!r}") from None


class Exporter(Protocol):
    """One backend's converter: writes ``path`` and returns the sidecar's input/output description."""

    def write(self, job: ExportJob, path: Any) -> dict[str, Any]: ...


@dataclass
class ExportJob:
    model: nn.Module  # eval mode; exporters wrap it, never change it
    config: dict[str, Any]  # the metadata to embed: the run's config plus format, precision and input size
    fmt: Format
    img_size: int
    calibration: np.ndarray | None  # raw uint8 NHWC training images, for int8 formats
    options: ExportOptions
    parity: tuple[np.ndarray, np.ndarray] | None = None  # the parity check's validation images and labels
    # Where an int8 exporter leaves a copy of the float file of the same model, which the export
    # times the int8 file against; None: no copy wanted.
    float_copy: Path | None = None

    def pixel_model(self, layout: str, model: nn.Module | None = None, probabilities: bool = False) -> PixelModel:
        """``model`` (default: the run's) behind the raw-pixel front end, in ``layout``."""
        return PixelModel(model or self.model, self.config["mean"], self.config["std"], layout, probabilities).eval()

    def pixel_io(self, layout: str, dtype: str, output: str, batch: int | str = 1) -> dict[str, Any]:
        """The sidecar's "input" and "output" of a file that takes raw RGB pixels 0..255 at this job's
        size, in ``layout`` ("NHWC" or "NCHW"), ``batch`` images a call ("dynamic": any, -1 in the
        shape), and gives float32 ``output`` (logits or probabilities). Quantisation: none on either
        side unless the exporter records one."""
        n, s = -1 if batch == DYNAMIC_BATCH else batch, self.img_size
        return {
            "input": {
                "name": "pixels",
                "layout": layout,
                "dtype": dtype,
                "shape": [n, s, s, 3] if layout == "NHWC" else [n, 3, s, s],
                "batch": batch,
                "range": [0, 255],
                "quantization": None,
            },
            "output": {"name": output, "dtype": "float32", "quantization": None},
        }
