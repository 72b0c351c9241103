"""TFLite conversion with litert-torch and int8 quantisation with ai-edge-quantizer: the converters
that the TFLite exporter (tflite_export.py) and QAT (qat.py) both use."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ..common import UserError, atomic_path
from ..common.io import native_stderr_to
from .tflite_graph import FLOAT_SCOPE, input_height, rewrite_graph, uint8_input

_MACS_LINE = re.compile(r"equivalently\s+([0-9.]+)\s*([KMG])\s+MACs")


def _import_litert_torch():
    """litert_torch, loaded with INFO logging on: its native code reads TF_CPP_MIN_LOG_LEVEL once,
    when loaded, and importing coremltools sets it to 3, which would hide the MAC estimate."""
    if sys.modules.get("litert_torch") is not None:
        return sys.modules["litert_torch"]
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    try:
        with native_stderr_to([]):  # its native start-up INFO lines (absl, oneDNN)
            import litert_torch
    finally:
        if level is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = level
    return litert_torch


@contextlib.contextmanager
def _quiet(litert_torch):
    """Without the converter's progress lines, which it prints to stdout (a rich console)."""
    console = getattr(getattr(litert_torch, "progress", None), "console", None)
    before = getattr(console, "quiet", None)
    if console is not None:
        console.quiet = True
    try:
        yield
    finally:
        if console is not None:
            console.quiet = before


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
        with native_stderr_to(log), _quiet(litert_torch):
            litert_torch.convert(pixel_model_nhwc.eval(), (x,)).export(str(tmp))
        if optimize:  # the input normalisation as one depthwise conv: same arithmetic, faster (tflite_graph)
            rewrite_graph(tmp, tmp, ops=())
    return converter_macs("".join(log))


def quantize_tflite_int8(
    float_path: Path,
    calibration_pixels,
    path: Path,
    graph: str = "fast",
    float_ops: tuple[str, ...] = (),
    ranges: dict[str, dict] | None = None,
    full_integer: bool = False,
) -> None:
    """int8 (weights per channel, activations per tensor), calibrated on real images.

    The input is raw pixels, quantised with scale 1 so every value 0..255 is exact: uint8 (zero
    point 0) for graph="fast", int8 (zero point -128) for "stock". A closing SOFTMAX stays float.

    graph="fast" (the default) first rewrites the float graph so XNNPACK runs all of it
    (deployed_float_graph; full_integer as there): HARD_SWISH and average pools become int8 ops it
    has kernels for.
    graph="stock" quantises the converter's graph as it is, keeping `float_ops` float: the
    baselines benchmarks/int8_latency.py compares against.

    ranges: every activation's range (tensor name -> min/max) to use instead of calibrating
    (quantisation-aware training's, qat.py); calibration_pixels are then not needed.
    """
    if importlib.util.find_spec("ai_edge_quantizer") is None:
        raise UserError("int8 TFLite needs ai-edge-quantizer: pip install 'skipnet-deploy[tflite]'") from None
    if graph not in ("fast", "stock"):
        raise ValueError(f"graph must be 'fast' or 'stock', not {graph!r}")
    if graph == "fast":
        with tempfile.TemporaryDirectory() as tmp:
            fast = Path(tmp) / "fast.tflite"
            deployed_float_graph(float_path, fast, full_integer)
            return quantize_deployed(fast, calibration_pixels, path, ranges)
    with native_stderr_to([]), warnings.catch_warnings():  # LiteRT's INFO lines, the quantiser's progress bars
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")  # its calibration mode
        model = _quantize(float_path, calibration_pixels, float_ops, ranges)
    with atomic_path(path) as tmp:
        tmp.write_bytes(model)


def deployed_float_graph(float_path: Path, dst: Path, full_integer: bool = False) -> None:
    """The float graph the shipped int8 file is quantised from (tflite_graph's rewrites): the one
    definition that post-training quantisation and QAT's fake-quantised model (fake_quant.py) both
    follow.

    By default the layers reading or writing maps at least half the input's height (the stem and
    the first block) stay float. full_integer: every op int8 but the closing softmax, as NPU
    delegates require; as accurate since calibration takes each range over all images, faster on
    some CPUs and slower on others (README, "The int8 TFLite graph"; benchmarks/int8_latency.py)."""
    height = None if full_integer else input_height(float_path) // 2
    rewrite_graph(float_path, dst, int8=True, float_min_height=height)


def quantize_deployed(fast_path: Path, calibration_pixels, path: Path, ranges: dict[str, dict] | None = None) -> None:
    """int8 of a graph deployed_float_graph wrote (calibrated, or with the given ``ranges``), taking
    uint8 pixels as they are."""
    with tempfile.TemporaryDirectory() as tmp:
        int8 = Path(tmp) / "int8.tflite"
        quantize_tflite_int8(fast_path, calibration_pixels, int8, graph="stock", ranges=ranges)
        uint8_input(int8, path)


def _quantize(float_path: Path, calibration_pixels, float_ops: tuple[str, ...], ranges: dict | None = None) -> bytes:
    """ai-edge-quantizer's static int8 recipe, with `float_ops` and FLOAT_SCOPE left float."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer

    signature, io = next(iter(Interpreter(model_path=str(float_path)).get_signature_list().items()))
    input_name = io["inputs"][0]
    qt = quantizer.Quantizer(str(float_path))
    qt.add_static_config(
        regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, activation_num_bits=8, weight_num_bits=8
    )
    for op in float_ops:  # benchmarks/int8_latency.py measures what keeping each in float buys
        qt.update_quantization_recipe(
            regex=".*",
            operation_name=qtyping.TFLOperationName[op],
            algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE,
        )
    # Ops tflite_graph marked to stay float (high-resolution layers where float kernels are faster).
    qt.update_quantization_recipe(
        regex=f"^{FLOAT_SCOPE}",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE,
    )
    if ranges is not None:
        calibration = dict(ranges)
    else:
        samples = [
            {input_name: calibration_pixels[i : i + 1].astype(np.float32)} for i in range(len(calibration_pixels))
        ]
        calibration = _calibrate(qt, float_path, {signature: samples})
    # Raw pixels: fix the input range to 0..255 so every pixel value is representable (scale 1, zero point -128).
    calibration[f"{signature}_{input_name}"] = {"min": np.float32(0), "max": np.float32(255)}
    return bytes(qt.quantize(calibration, enable_progress_report=False).quantized_model)


def _calibrate(qt, float_path: Path, samples: dict) -> dict:
    """Every activation's range over all the calibration images: its smallest and largest value,
    as onnxruntime's MinMax calibration (the ONNX export's) has it.

    Quantizer.calibrate keeps a moving average of each image's min/max instead (weight 0.95 on
    the past): the ranges follow the last ~20 images and clip what the others reach, so the
    int8 file answers differently from its float model more often."""
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    recipe = recipe_manager.RecipeManager()
    recipe.load_quantization_recipe(qt.get_quantization_recipe())
    calib = calibrator.Calibrator(
        Path(float_path).read_bytes(), num_threads=1, qsv_update_func=qsv_utils.min_max_update
    )
    calib.calibrate(samples, recipe)
    return calib.get_model_qsvs()


def quantization_of(path: Path) -> dict:
    """dtype, scale and zero point of a .tflite model's input and output (scale 0: not quantised)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))

    def spec(d) -> dict:
        return {
            "dtype": np.dtype(d["dtype"]).name,
            "scale": float(d["quantization"][0]),
            "zero_point": int(d["quantization"][1]),
        }

    return {"input": spec(it.get_input_details()[0]), "output": spec(it.get_output_details()[0])}
