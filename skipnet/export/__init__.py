"""Export stage: a run directory -> a mobile model file + NAME.EXT.json sidecar, checked for parity.

    result = skipnet.export.export("runs/s", "onnx")    # exports/s.onnx and exports/s.onnx.json
    result.parity["passed"]

Formats: ONNX and TFLite (float32, int8 post-training; TFLite also quantisation-aware),
CoreML (float16 / int8 weights).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..common import UserError, write_json
from ..data import build_datasets, sample_pixels
from ..models import PixelModel, count_macs, count_params, load_checkpoint
from ..runtime.predictor import sidecar_path
from .parity import INT8_MIN_AGREEMENT, parity_report

# torchao (imported by litert-torch) registers an Enum the way torch 2.14 deprecates; the warning
# is not the user's to act on and would make every export's stderr, errors included, noisier.
logging.getLogger("torch.utils._pytree").addFilter(lambda r: "is an Enum subclass" not in r.getMessage())

FORMATS = {"onnx": ".onnx", "tflite": ".tflite", "coreml": ".mlpackage"}


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    parity: dict[str, Any] | None
    seconds: float


def _preprocess_at(pre: dict[str, Any], img_size: int) -> dict[str, Any]:
    """The run's preprocessing at another input size (same resize-to-crop ratio)."""
    if img_size == pre["crop"]:
        return pre
    return dict(pre, img_size=img_size, crop=img_size, resize=round(img_size * pre["resize"] / pre["crop"]))


def export(run_dir: str | os.PathLike, format: str, out: str | os.PathLike | None = None, int8: bool = False,
           img_size: int | None = None, verify: bool = True, verify_samples: int = 256,
           data_dir: str | None = None, dynamic_batch: bool = True, calibration_samples: int = 256,
           qat_epochs: int = 0, qat_limit: int | None = None) -> ExportResult:
    if format not in FORMATS:
        raise UserError(f"unknown format {format!r}; choose one of: {', '.join(FORMATS)}")
    if qat_epochs and not (int8 and format == "tflite"):
        raise UserError("--qat-epochs fine-tunes for int8 TFLite: add --int8 and use --format tflite")
    if qat_epochs < 0 or (qat_limit is not None and qat_limit < 1):
        raise UserError("--qat-epochs must be >= 0 and --qat-limit positive")
    t0 = time.perf_counter()
    model, config = load_checkpoint(run_dir)
    img_size = img_size or int(config["img_size"])
    multiple = getattr(model, "input_multiple", 1)
    if img_size < multiple or img_size % multiple:
        raise UserError(f"--img-size {img_size} does not fit {config['model']}: use a multiple of {multiple}")
    run_dir = Path(run_dir)
    path = Path(out) if out else Path("exports") / f"{run_dir.name}{'_int8' if int8 else ''}{FORMATS[format]}"
    if path.suffix != FORMATS[format]:
        raise UserError(f"--out {path} should end in {FORMATS[format]} for --format {format}")

    pre = _preprocess_at(config["preprocess"], img_size)
    # Read the data first: missing calibration or parity images must fail before anything is written.
    needs_calibration = int8 and format != "coreml"  # CoreML int8 is weight-only
    needs_parity_images = verify and (format != "coreml" or sys.platform == "darwin")  # CoreML runs on macOS only
    calibration = pixels = labels = None
    if needs_calibration or needs_parity_images:
        train, val, _ = build_datasets(config["dataset"], data_dir or config.get("train", {}).get("data_dir"),
                                       img_size, augment=False)
        if needs_calibration:
            calibration = sample_pixels(train.source, pre, calibration_samples)[0]
        if needs_parity_images:
            pixels, labels = sample_pixels(val.source, pre, verify_samples)
    nhwc_model = PixelModel(model, config["mean"], config["std"], "nhwc")

    if format == "onnx":
        shape, layout = [-1 if dynamic_batch else 1, 3, img_size, img_size], "NCHW"
    elif format == "tflite":
        shape, layout = [1, img_size, img_size, 3], "NHWC"
    else:
        shape, layout = [1, 3, img_size, img_size], "image (RGB)"
    exported = dict(config, img_size=img_size, preprocess=pre, format=format,
                    precision="int8" if int8 else "float32",
                    input={"name": "pixels", "layout": layout, "dtype": "float32", "shape": shape,
                           "range": [0, 255], "quantization": None},
                    output={"name": "logits", "dtype": "float32", "quantization": None},
                    exporter_version=__version__)
    macs_litert = None
    if format == "onnx":
        from .onnx_export import export_onnx, quantize_onnx_int8

        nchw_model = PixelModel(model, config["mean"], config["std"], "nchw")
        if int8:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                float_path = Path(tmp) / "float.onnx"
                export_onnx(nchw_model, img_size, float_path, exported, dynamic_batch)
                quantize_onnx_int8(float_path, calibration, path)
        else:
            export_onnx(nchw_model, img_size, path, exported, dynamic_batch)
    elif format == "coreml":
        from .coreml_export import export_coreml, validate_coreml

        norm = export_coreml(model, exported, img_size, path, int8)
        exported["input"].update(name="image", dtype="image", normalization=norm)
        exported["output"] = {"name": "classLabel", "probabilities": "classLabel_probs"}
        exported["weights"] = "int8" if int8 else "float16"
    elif not int8:
        from .tflite_export import export_tflite

        macs_litert = export_tflite(nhwc_model, img_size, path)
    else:
        import tempfile

        from .tflite_export import export_tflite, quantization_of, quantize_tflite_int8

        to_quantize = nhwc_model
        if qat_epochs:
            from .qat import qat_finetune

            tuned = qat_finetune(model, exported, img_size, qat_epochs, data_dir, qat_limit)
            to_quantize = PixelModel(tuned, config["mean"], config["std"], "nhwc")
            exported["qat"] = {"epochs": qat_epochs, "images_per_epoch": qat_limit, "loss": config.get("loss")}
        with tempfile.TemporaryDirectory() as tmp:
            float_path = Path(tmp) / "float.tflite"
            macs_litert = export_tflite(to_quantize, img_size, float_path)
            quantize_tflite_int8(float_path, calibration, path, img_size)
        q = quantization_of(path)
        exported["input"].update(dtype=q["input"]["dtype"], quantization=q["input"])
        exported["output"].update(dtype=q["output"]["dtype"], quantization=q["output"])

    exported["complexity"] = {"params": count_params(model), "macs": count_macs(model, img_size)}
    if format == "tflite" and macs_litert:  # the converter's own count, a check on ours
        exported["complexity"]["macs_litert"] = int(macs_litert)
    if calibration is not None:
        exported["calibration"] = {"images": int(len(calibration)), "split": "train", "dataset": config["dataset"]}

    parity = None
    if format == "coreml":
        parity = validate_coreml(path, img_size, exported["class_names"])
        if needs_parity_images:
            parity.update(_coreml_numeric(path, nhwc_model, exported, pixels, labels))
            parity["passed"] = parity["passed"] and parity["top1_agreement"] >= INT8_MIN_AGREEMENT
    elif verify:
        from ..runtime import load

        predictor = load(path, config=exported)
        parity = parity_report(nhwc_model, predictor.backend, pixels, labels, exported["precision"])
    exported["parity"] = parity
    sidecar = sidecar_path(path)
    write_json(sidecar, exported)
    return ExportResult(path, sidecar, parity, time.perf_counter() - t0)


def _coreml_numeric(path: Path, nhwc_model, config, pixels, labels) -> dict[str, Any]:
    """macOS only: CoreML's top-1 against PyTorch's on the same images, through skipnet.load."""
    from ..runtime import load

    with torch.inference_mode():
        ref = nhwc_model(torch.from_numpy(pixels)).argmax(1).numpy()
    got = load(path, config=config).backend.logits(pixels).argmax(1)
    return {"images": int(len(pixels)), "top1_agreement": float((ref == got).mean()),
            "torch_top1": float((ref == labels).mean()), "exported_top1": float((got == labels).mean())}


__all__ = ["FORMATS", "ExportResult", "export"]
