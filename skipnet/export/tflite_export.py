"""TFLite via litert-torch. Input NHWC float32 raw pixels 0..255 (the layout Android/iOS apps feed)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..common import UserError, atomic_path


def export_tflite(pixel_model_nhwc: nn.Module, img_size: int, path: Path) -> None:
    try:
        import litert_torch
    except ImportError:
        raise UserError("TFLite export needs litert-torch: pip install 'skipnet-deploy[export]'") from None
    x = torch.rand(1, img_size, img_size, 3) * 255
    # The input permute is folded into the first convolution by the converter: no TRANSPOSE op remains.
    edge = litert_torch.convert(pixel_model_nhwc.eval(), (x,))
    with atomic_path(path) as tmp:
        edge.export(str(tmp))


def quantize_tflite_int8(float_path: Path, calibration_pixels, path: Path,
                         float_ops: tuple[str, ...] = ("HARD_SWISH",)) -> None:
    """Full-integer int8 (weights per channel, activations per tensor), calibrated on real images.

    HARD_SWISH stays float: XNNPACK runs int8 HARD_SWISH only on the slow builtin kernel, which
    splits the delegated graph (toolchain.md); int8 -> DEQUANTIZE -> float HARD_SWISH -> QUANTIZE
    stays inside one XNNPACK partition. Input and output are int8 with scale and zero point.
    Returns the input/output quantisation parameters.
    """
    import numpy as np

    try:
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_quantizer import algorithm_manager, qtyping, quantizer
    except ImportError:
        raise UserError("int8 TFLite needs ai-edge-quantizer: pip install 'skipnet-deploy[export]'") from None
    signature, io = next(iter(Interpreter(model_path=str(float_path)).get_signature_list().items()))
    input_name = io["inputs"][0]
    qt = quantizer.Quantizer(str(float_path))
    qt.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                         activation_num_bits=8, weight_num_bits=8)
    for op in float_ops:  # benchmarks/int8_latency.py measures what keeping each in float buys
        qt.update_quantization_recipe(regex=".*", operation_name=qtyping.TFLOperationName[op],
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
