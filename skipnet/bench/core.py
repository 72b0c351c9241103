"""Host benchmark: parameters, MACs, file size and latency per model and format, interleaved."""
from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..common import UserError
from ..data import build_datasets, preprocess_config, sample_pixels
from ..models import PixelModel, count_macs, count_params, create_model, list_models

FORMATS = ("torch", "onnx", "onnx-int8", "tflite", "tflite-int8", "coreml-cpu", "coreml-all")
ALIASES = {"coreml": ("coreml-cpu", "coreml-all")}  # CoreML per compute unit: CPU only, and all units
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def calibration_pixels(n: int, size: int, data_dir: str | None = None) -> np.ndarray:
    """``n`` real Fashion-MNIST training images, evenly spread, as raw uint8 NHWC pixels at ``size``."""
    train, _, info = build_datasets("fashion-mnist", data_dir, size, augment=False)
    return sample_pixels(train.source, preprocess_config(info, size), n)[0]


def estimate_bn_statistics(pixel_model: PixelModel, pixels: np.ndarray, batch: int = 8) -> None:
    """BatchNorm running statistics from real images (cumulative average), then eval mode: fresh
    statistics leave activations so small that some int8 scales fall outside XNNPACK's limits."""
    for m in pixel_model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    pixel_model.train()
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            pixel_model(torch.from_numpy(pixels[i:i + batch]).float())
    pixel_model.eval()


def _config(name: str, size: int, precision: str) -> dict[str, Any]:
    pre = {"img_size": size, "resize": size, "crop": size, "grayscale_to_rgb": True,
           "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return {"model": name, "num_classes": 1000, "class_names": [str(i) for i in range(1000)], "img_size": size,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "preprocess": pre, "precision": precision}


def _build(fmt: str, pm: PixelModel, name: str, size: int, calib: np.ndarray, work: Path, threads: int):
    """(path or None, timed callable taking uint8 NHWC pixels, runtime description) for one format."""
    from ..runtime.backends import OnnxBackend, TFLiteBackend

    precision = "int8" if fmt.endswith("int8") else "float32"
    config = _config(name, size, precision)
    if fmt == "torch":
        def run(x, model=pm):
            with torch.inference_mode():
                return model(torch.from_numpy(x))
        return None, run, f"PyTorch {torch.__version__} eager"
    if fmt.startswith("onnx"):
        from ..export.onnx_export import export_onnx, quantize_onnx_int8

        path = work / f"{name}_{fmt}.onnx"
        nchw = PixelModel(pm.model, IMAGENET_MEAN, IMAGENET_STD, "nchw").eval()
        if precision == "int8":
            export_onnx(nchw, size, work / f"{name}_onnx_float.onnx", config)
            quantize_onnx_int8(work / f"{name}_onnx_float.onnx", calib, path)
        else:
            export_onnx(nchw, size, path, config)
        backend = OnnxBackend(path, threads, dict(config, input={"layout": "NCHW"}))
        return path, backend.logits, f"onnxruntime {_version('onnxruntime')} CPU"
    if fmt.startswith("tflite"):
        from ..export.tflite_export import export_tflite, quantize_tflite_int8

        path = work / f"{name}_{fmt}.tflite"
        if precision == "int8":
            export_tflite(pm, size, work / f"{name}_tflite_float.tflite")
            quantize_tflite_int8(work / f"{name}_tflite_float.tflite", calib, path, size)
        else:
            export_tflite(pm, size, path)
        backend = TFLiteBackend(path, threads, config)
        return path, backend.logits, f"LiteRT {_version('ai-edge-litert')} XNNPACK"
    if fmt.startswith("coreml"):  # macOS only (checked by the caller)
        import coremltools as ct
        from PIL import Image

        from ..export.coreml_export import export_coreml

        path = work / f"{name}.mlpackage"
        if not path.exists():
            export_coreml(pm.model, dict(config, dataset="benchmark"), size, path, int8=False)
        units = ct.ComputeUnit.CPU_ONLY if fmt == "coreml-cpu" else ct.ComputeUnit.ALL
        mlmodel = ct.models.MLModel(str(path), compute_units=units)
        return path, lambda x: mlmodel.predict({"image": Image.fromarray(x[0])}), \
            f"coremltools {_version('coremltools')} ({'CPU only' if fmt == 'coreml-cpu' else 'all compute units'})"
    raise UserError(f"format {fmt} cannot be timed on this host")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def expand_formats(formats: list[str]) -> list[str]:
    return [f for fmt in formats for f in ALIASES.get(fmt, (fmt,))]


def _check(models: list[str], formats: list[str], img_size: int, threads: int, runs: int, warmup: int) -> None:
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}; choose from: {', '.join(list_models())}")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise UserError(f"unknown format(s) {', '.join(bad)}; choose from: {', '.join([*FORMATS, *ALIASES])}")
    if formats and all(f.startswith("coreml") for f in formats) and sys.platform != "darwin":
        raise UserError("timing CoreML needs macOS (coremltools runs models only there); on this machine "
                        "benchmark --formats tflite,tflite-int8,onnx instead")
    if runs < 1 or warmup < 0 or threads < 1 or img_size < 32 or img_size % 32:
        raise UserError("--runs and --threads must be positive, --warmup >= 0, --img-size a multiple of 32")


def benchmark(models: list[str], formats: list[str], img_size: int = 224, threads: int = 1, runs: int = 50,
              warmup: int = 5, calibration: int = 64, data_dir: str | None = None, reference: str = "mobilenet_v3_large",
              progress: bool = True, android: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per (model, format). Latencies come from ``runs`` rounds that time every model and
    format once each, in turn, so drift in the machine's speed hits all of them alike.

    ``android`` ({"benchmark_binary": PATH, "serial": S, "delegate": None|"gpu"|"nnapi"}) times
    the .tflite files on the attached phone with benchmark_model instead (bench/android.py).
    """
    formats = expand_formats(formats)
    _check(models, formats, img_size, threads, runs, warmup)
    if android is not None:
        from .android import Adb, check_binary

        if any(not f.startswith("tflite") for f in formats):
            raise UserError("--android times .tflite files: use --formats tflite,tflite-int8")
        check_binary(android["benchmark_binary"])
        Adb(android.get("serial")).require_device()  # fail before minutes of export
    torch.set_num_threads(threads)
    calib = calibration_pixels(calibration, img_size, data_dir)
    x = calib[:1]
    rows, timed = [], {}
    host = {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0))}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in tqdm(models, desc="export", disable=not progress):
            torch.manual_seed(0)
            model = create_model(name, 1000).eval()
            params, macs = count_params(model), count_macs(model, img_size)
            pm = PixelModel(model, IMAGENET_MEAN, IMAGENET_STD, "nhwc")
            estimate_bn_statistics(pm, calib)
            for fmt in formats:
                row = {"model": name, "format": fmt, "params": params, "macs": macs, "img_size": img_size,
                       "threads": threads, **host}
                if fmt.startswith("coreml") and sys.platform != "darwin":
                    row["skipped"] = "CoreML runs only on macOS: not timed on this host"
                    rows.append(row)
                    continue
                path, run, runtime = _build(fmt, pm, name, img_size, calib, work, threads)
                row.update(runtime=runtime, size_mb=round((path.stat().st_size if path else
                                                           sum(p.numel() * p.element_size()
                                                               for p in model.state_dict().values())) / 1e6, 2))
                rows.append(row)
                timed[(name, fmt)] = (run, row)
                row["path"] = path
        if android is not None:
            from .android import run_on_android

            device = run_on_android([(f"{n} {f}", row.pop("path")) for (n, f), (_, row) in timed.items()],
                                    android["benchmark_binary"], android.get("serial"), threads, runs, warmup,
                                    android.get("delegate"))
            for (_, row), measured in zip(timed.values(), device):
                row.update({k: v for k, v in measured.items() if k not in ("model", "file")}, cpu=measured["device"],
                           cores=None)
            return rows
        for _, row in timed.values():
            row.pop("path")
        for run, _ in timed.values():
            for _ in range(warmup):
                run(x)
        times = {k: [] for k in timed}
        for _ in tqdm(range(runs), desc="timing (interleaved rounds)", disable=not progress):
            for k, (run, _) in timed.items():
                t = time.perf_counter()
                run(x)
                times[k].append((time.perf_counter() - t) * 1e3)
    for (name, fmt), (run, row) in timed.items():
        ts = times[(name, fmt)]
        row.update(p50_ms=round(statistics.median(ts), 3), p90_ms=round(float(np.percentile(ts, 90)), 3),
                   mean_ms=round(statistics.fmean(ts), 3), std_ms=round(statistics.pstdev(ts), 3), runs=runs)
        ref = times.get((reference, fmt))
        if ref:  # median of the per-round ratios: robust to drift between rounds
            row[f"latency_vs_{reference}"] = round(statistics.median(a / b for a, b in zip(ts, ref)), 3)
    return rows
