"""ONNX: torch.onnx (dynamo) -> onnxsim -> SkipNet metadata. Input NCHW float32 raw pixels 0..255.

int8 is onnxruntime's static QDQ quantisation. PTQ quantises the run's model with ranges
calibrated on training images. QAT exports the fine-tuned int8 TFLite graph (qat.py) itself, in
float, and quantises it with the TFLite file's scales, tensor by tensor: the same model, weights
and quantisation points as the QAT .tflite.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..common import UserError, atomic_path
from ..common.contract import DYNAMIC_BATCH

OPSET = 18


class OnnxExporter:
    """NCHW float32 raw pixels in (batch 1 unless told otherwise: phones' execution providers need
    fixed shapes), float32 logits out; int8 is onnxruntime's static QDQ quantisation of the float graph."""

    def write(self, job, path: Path) -> dict[str, Any]:
        batch = 1 if job.options.batch is None else job.options.batch
        fixed = None if batch == DYNAMIC_BATCH else batch
        spec = job.pixel_io("NCHW", "float32", "logits", batch)
        if job.fmt.precision != "int8":
            export_onnx(job.pixel_model("nchw"), job.img_size, path, job.config, fixed)
        else:
            self._write_int8(job, path, fixed, spec)
        from .onnx_mobile import mobile_usability

        spec["mobile"] = mobile_usability(path)
        return spec

    @staticmethod
    def _write_int8(job, path: Path, fixed: int | None, spec: dict[str, Any]) -> None:
        import tempfile

        model = job.pixel_model("nchw")
        with tempfile.TemporaryDirectory() as tmp:
            float_path = Path(tmp) / "float.onnx"
            if job.fmt.int8 != "qat":
                export_onnx(model, job.img_size, float_path, job.config, fixed)
                if job.float_copy is not None:
                    shutil.copyfile(float_path, job.float_copy)
                quantize_onnx_int8(float_path, job.calibration, path)
                return
            if job.float_copy is not None:  # QAT's float graph below is the fake-quantised one, not what ships in float
                export_onnx(model, job.img_size, job.float_copy, job.config, fixed)
            from .fake_quant import NCHWInput
            from .qat import report, settings_of, train

            graph, spec["qat"], _ = train(job, settings_of(job), Path(tmp), progress=True)
            graph.quantize, graph.features_tensor = False, None  # in float; Bias Loss's features were for training
            export_onnx(NCHWInput(graph), job.img_size, float_path, job.config, fixed)
            spec["qat"]["scales"] = quantize_onnx_qat(float_path, graph, job.calibration, path)
        report(spec, graph, job, path)


def export_onnx(
    pixel_model: nn.Module, img_size: int, path: Path, config: dict[str, Any], batch: int | None = None
) -> None:
    """``pixel_model`` as an ONNX file taking ``batch`` images (None: any number)."""
    try:
        import onnx
        import onnxsim
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxsim: pip install 'skipnet-deploy[onnx]'") from None
    # A dynamic batch is traced at 2: torch.export specialises a dimension of size 1 to a constant.
    x = torch.rand(batch or 2, 3, img_size, img_size) * 255
    dynamic = None if batch else {"pixels": {0: torch.export.Dim("batch", min=1)}}
    program = torch.onnx.export(
        pixel_model.eval(),
        (x,),
        dynamo=True,
        opset_version=OPSET,
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_shapes=dynamic,
        verbose=False,
    )
    proto = program.model_proto
    simplified, ok = onnxsim.simplify(proto)
    if ok:  # onnxsim checks its result numerically; keep the original if it could not
        proto = simplified
    del proto.metadata_props[:]
    meta = {
        "skipnet_config": json.dumps(config),
        "labels": json.dumps(config["class_names"]),
        "preprocess": json.dumps(config["preprocess"]),
        "model": config["model"],
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"SkipNet Deploy {config['model']}: raw RGB pixels 0..255 NCHW float32 -> logits"
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


def quantize_onnx_int8(
    float_path: Path,
    calibration_pixels,
    path: Path,
    overrides: dict | None = None,
    float_nodes: list[str] | None = None,
    optimize: bool = True,
    steps: tuple | None = None,
    quantizer: dict | None = None,
) -> None:
    """QDQ int8 (per-channel int8 weights, per-tensor uint8 activations) with onnxruntime's static quantiser.

    Input and output stay float32 (raw pixels in, logits out), so the model is fed like the float one.
    ``overrides``: fixed scales and zero points of some tensors (by name; the others are calibrated);
    ``float_nodes``: nodes left in float; ``optimize``: rewrite the graph into ops onnxruntime runs
    in int8 (onnx_graph.py; ``steps`` of it, default all) and let onnxruntime fuse ops first (both
    would rename the tensors that ``overrides`` names); ``quantizer``: quantize_static arguments
    replacing ours (benchmarks/onnx_int8.py's other configurations).
    """
    import tempfile

    import numpy as np

    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quant_pre_process,
            quantize_static,
        )
    except ImportError:
        raise UserError("ONNX int8 needs onnxruntime: pip install 'skipnet-deploy[onnx]'") from None

    import onnxruntime as ort

    from ..runtime.backends import fixed_batches, input_batch

    nchw = np.ascontiguousarray(calibration_pixels.transpose(0, 3, 1, 2), dtype=np.float32)
    # A fixed batch is calibrated in batches of its size, a dynamic one image by image.
    batch = input_batch(ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])) or 1

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = (part for part, _ in fixed_batches(nchw, batch))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"pixels": batch}

    with tempfile.TemporaryDirectory() as tmp:
        prepared, source = Path(tmp) / "prepared.onnx", float_path
        if optimize:
            import onnx

            from .onnx_graph import STEPS, rewrite_onnx

            model, source = onnx.load(str(float_path)), Path(tmp) / "rewritten.onnx"
            rewrite_onnx(model, STEPS if steps is None else steps)
            onnx.save(model, str(source))
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True, skip_optimization=not optimize)
        with atomic_path(path) as out:
            # uint8 activations, int8 weights (U8S8): onnxruntime's x86 int8 kernels are built for that
            # pair; int8 activations ran 2.8x slower in a one-off side-by-side check (MobileNetV3-Large,
            # 224x224, 1 thread: 18.2 vs 6.5 ms).
            settings = {
                "quant_format": QuantFormat.QDQ,
                "per_channel": True,
                "activation_type": QuantType.QUInt8,
                "weight_type": QuantType.QInt8,
                "nodes_to_exclude": float_nodes or [],
                "extra_options": {"TensorQuantOverrides": overrides or {}},
                **(quantizer or {}),
            }
            quantize_static(str(prepared), str(out), Reader(), **settings)


def quantize_onnx_qat(float_path: Path, graph, calibration_pixels, path: Path) -> dict[str, int]:
    """The QDQ model of ``float_path`` (``graph`` exported in float) with ``graph``'s int8 scales:
    each ONNX tensor is matched to the TFLite tensor with the same values on calibration images.
    Returns how many tensors got a TFLite scale and how many ONNX calibrated."""
    import onnx

    model = onnx.load(str(float_path))
    overrides, float_nodes, unmatched = _tflite_scales(model, graph, calibration_pixels[:16])
    quantize_onnx_int8(float_path, calibration_pixels, path, overrides, float_nodes, optimize=False)
    return {"from_tflite": len(overrides), "calibrated": len(unmatched)}


def _tflite_scales(model, graph, pixels) -> tuple[dict, list[str], list[str]]:
    """TensorQuantOverrides for the ONNX tensors that the TFLite graph quantises (uint8: the int8
    zero point + 128, the same grid), the nodes computing its float tensors, and what is unmatched.
    A tensor the TFLite graph does not have (ONNX's layout transposes and paddings, a convolution's
    output before its ReLU, which TFLite fuses) takes its neighbour's scale, as TFLite quantises it."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from ..runtime.backends import input_batch, run_batched

    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in producer)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    nchw = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32)
    onnx_values = dict(zip(producer, run_batched(session, nchw, input_batch(session))))
    values = graph.float_values(torch.from_numpy(pixels).float())
    overrides, float_nodes, unmatched = {}, [], []
    for name, v in onnx_values.items():
        if v.dtype != np.float32 or v.ndim == 0 or v.shape[0] != len(pixels):
            continue
        found = graph.find(values, torch.from_numpy(v))
        scales = [graph.scales[i] for i in found if i in graph.scales]
        if scales:
            scale, zero_point = scales[-1]
            overrides[name] = [
                {"scale": np.array(scale, np.float32), "zero_point": np.array(zero_point + 128, np.uint8)}
            ]
        elif found:
            float_nodes.append(producer[name].name)
        else:
            unmatched.append(name)
    _neighbours_scales(overrides, unmatched, producer, consumers)
    return overrides, float_nodes, [u for u in unmatched if u not in overrides]


def _neighbours_scales(overrides: dict, unmatched: list[str], producer: dict, consumers: dict) -> None:
    moves = ("Pad", "Transpose", "Reshape", "Squeeze")
    changed = True
    while changed:
        changed = False
        for name in unmatched:
            if name in overrides:
                continue
            p, c = producer[name], consumers.get(name, [])
            source = None
            if p.op_type in moves and p.input[0] in overrides:
                source = p.input[0]
            elif c and all(n.op_type in moves + ("Relu", "Clip") for n in c) and c[0].output[0] in overrides:
                source = c[0].output[0]
            if source is not None:
                overrides[name], changed = overrides[source], True
