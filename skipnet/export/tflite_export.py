"""TFLite via litert-torch. Input NHWC float32 raw pixels 0..255 (the layout Android/iOS apps feed)."""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..common import UserError, atomic_path
from .tflite_graph import FLOAT_SCOPE, rewrite_graph


_MACS_LINE = re.compile(r"equivalently\s+([0-9.]+)\s*([KMG])\s+MACs")


@contextlib.contextmanager
def _native_stderr(sink: list[str]):
    """Collect what C++ code writes to file descriptor 2 into ``sink``: the LiteRT converter logs
    its own MAC estimate there, among INFO lines a user need not see. Shown only if conversion fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    failed = True
    with tempfile.TemporaryFile(mode="w+b") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            text = f.read().decode("utf-8", "replace")
            sink.append(text)
            if failed:
                sys.stderr.write(text)


def _import_litert_torch():
    """litert_torch, loaded with INFO logging on: its native code reads TF_CPP_MIN_LOG_LEVEL once,
    when loaded, and importing coremltools sets it to 3, which would hide the MAC estimate."""
    if sys.modules.get("litert_torch") is not None:
        return sys.modules["litert_torch"]
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    try:
        import litert_torch
    finally:
        if level is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = level
    return litert_torch


def converter_macs(log: str) -> float | None:
    """The converter's estimate ("... equivalently 219.455 M  MACs") as a number of MACs."""
    found = _MACS_LINE.findall(log)
    if not found:
        return None
    value, unit = found[-1]
    return float(value) * {"K": 1e3, "M": 1e6, "G": 1e9}[unit]


def export_tflite(pixel_model_nhwc: nn.Module, img_size: int, path: Path, optimize: bool = True) -> float | None:
    """Float32 .tflite; optimize=False keeps the converter's graph as it is (a benchmark baseline).

    Returns LiteRT's own estimate of the graph's MACs (None if the converter did not log one), the
    cross-check for models.count_macs.
    """
    try:
        litert_torch = _import_litert_torch()
    except ImportError:
        raise UserError("TFLite export needs litert-torch: pip install 'skipnet-deploy[tflite]'") from None
    x = torch.rand(1, img_size, img_size, 3) * 255
    log: list[str] = []
    with atomic_path(path) as tmp:
        # The input permute is folded into the first convolution by the converter: no TRANSPOSE op remains.
        with _native_stderr(log):
            litert_torch.convert(pixel_model_nhwc.eval(), (x,)).export(str(tmp))
        if optimize:  # the input normalisation as one depthwise conv: same arithmetic, faster (tflite_graph)
            rewrite_graph(tmp, tmp, ops=())
    return converter_macs("".join(log))


def quantize_tflite_int8(float_path: Path, calibration_pixels, path: Path, img_size: int | None = None,
                         graph: str = "fast", float_ops: tuple[str, ...] = ()) -> None:
    """int8 (weights per channel, activations per tensor), calibrated on real images; input and
    output are int8 with scale and zero point.

    graph="fast" (the default) first rewrites the float graph so XNNPACK runs it all (tflite_graph):
    the layers reading or writing maps at least half the input size stay float, where its float
    kernels are faster; after them HARD_SWISH and average pools become int8 ops it has kernels for.
    graph="stock" quantises the converter's graph as it is, keeping `float_ops` float: the
    baselines benchmarks/int8_latency.py compares against.
    """

    import numpy as np

    try:
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_quantizer import algorithm_manager, qtyping, quantizer
    except ImportError:
        raise UserError("int8 TFLite needs ai-edge-quantizer: pip install 'skipnet-deploy[tflite]'") from None
    if graph not in ("fast", "stock"):
        raise ValueError(f"graph must be 'fast' or 'stock', not {graph!r}")
    if graph == "fast":
        with tempfile.TemporaryDirectory() as tmp:
            fast = Path(tmp) / "fast.tflite"
            size = img_size or int(calibration_pixels.shape[1])
            rewrite_graph(float_path, fast, float_min_height=size // 2)
            return quantize_tflite_int8(fast, calibration_pixels, path, graph="stock")
    signature, io = next(iter(Interpreter(model_path=str(float_path)).get_signature_list().items()))
    input_name = io["inputs"][0]
    qt = quantizer.Quantizer(str(float_path))
    qt.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                         activation_num_bits=8, weight_num_bits=8)
    for op in float_ops:  # benchmarks/int8_latency.py measures what keeping each in float buys
        qt.update_quantization_recipe(regex=".*", operation_name=qtyping.TFLOperationName[op],
                                      algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    # Ops tflite_graph marked to stay float (high-resolution layers where float kernels are faster).
    qt.update_quantization_recipe(regex=f"^{FLOAT_SCOPE}", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                  algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    samples = [{input_name: calibration_pixels[i:i + 1].astype(np.float32)} for i in range(len(calibration_pixels))]
    calibration = qt.calibrate({signature: samples}, num_threads=1)
    # Raw pixels: fix the input range to 0..255 so every pixel value is representable (scale 1, zero point -128).
    input_tensor = f"{signature}_{input_name}"
    if input_tensor in calibration:
        calibration[input_tensor] = {"min": np.zeros_like(calibration[input_tensor]["min"]),
                                     "max": np.full_like(calibration[input_tensor]["max"], 255.0)}
    result = qt.quantize(calibration, enable_progress_report=False)
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(result.quantized_model))


def quantization_of(path: Path) -> dict:
    """dtype, scale and zero point of a .tflite model's input and output (scale 0: not quantised)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))

    def spec(d) -> dict:
        return {"dtype": np.dtype(d["dtype"]).name, "scale": float(d["quantization"][0]),
                "zero_point": int(d["quantization"][1])}

    return {"input": spec(it.get_input_details()[0]), "output": spec(it.get_output_details()[0])}
