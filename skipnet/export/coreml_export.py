"""CoreML (mlprogram): an image input whose normalisation is CoreML's own scale/bias, classifier
labels, and SkipNet metadata. Runs only on macOS; on Linux the spec is validated.

Float and int8 weights (iOS 16+) convert the run's model. W8A8 (QAT, iOS 17+) converts the
fine-tuned int8 TFLite graph (qat.py) with its quantisation points as PyTorch quantize/dequantize
pairs, which coremltools' PyTorch frontend turns into int8 weights and quantised activations."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..common import UserError, atomic_dir


class CoreMLExporter:
    """An mlprogram classifier with an image input (iOS 16+); int8 means int8 weights."""

    def write(self, job, path: Path) -> dict[str, Any]:
        int8, qat = job.fmt.precision == "int8", job.fmt.int8 == "qat"
        spec = {
            "input": {
                "name": "image",
                "layout": "image (RGB)",
                "dtype": "image",
                "shape": [1, 3, job.img_size, job.img_size],
                "range": [0, 255],
                "quantization": None,
            },
            "output": {"name": "classLabel", "dtype": "string", "probabilities": "classLabel_probs"},
            "weights": "int8" if int8 else "float16",
        }
        if not qat:
            spec["input"]["normalization"] = export_coreml(job.model, job.config, job.img_size, path, int8)
            return spec
        import tempfile

        from .qat import report, settings_of, train

        with tempfile.TemporaryDirectory() as tmp:
            graph, spec["qat"], _ = train(job, settings_of(job), Path(tmp), progress=True)
        spec["input"]["normalization"] = export_coreml_w8a8(graph, job.config, job.img_size, path)
        spec["activations"] = "int8"
        report(spec, graph, job, path)  # macOS only: the file runs
        return spec

    def parity(self, job, path: Path, sidecar: dict[str, Any], pixels, labels) -> dict[str, Any]:
        """The package's spec, checked anywhere; on macOS also its top-1 against PyTorch's."""
        from .parity import INT8_MIN_AGREEMENT

        parity = validate_coreml(path, job.img_size, sidecar["class_names"], w8a8=job.fmt.int8 == "qat")
        if pixels is not None:  # macOS
            parity.update(_numeric(path, job, sidecar, pixels, labels))
            parity["passed"] = parity["passed"] and parity["top1_agreement"] >= INT8_MIN_AGREEMENT
        return parity


def _numeric(path: Path, job, config, pixels, labels) -> dict[str, Any]:
    """macOS only: CoreML's top-1 against PyTorch's on the same images, through skipnet.load."""
    from ..runtime import load

    with torch.inference_mode():
        ref = job.pixel_model("nhwc")(torch.from_numpy(pixels)).argmax(1).numpy()
    got = load(path, config=config).backend.logits(pixels).argmax(1)
    return {
        "images": int(len(pixels)),
        "top1_agreement": float((ref == got).mean()),
        "torch_top1": float((ref == labels).mean()),
        "exported_top1": float((got == labels).mean()),
    }


class _ChannelGain(nn.Module):
    """CoreML's ImageType has one scale for all channels; a per-channel std leaves a gain s0/s_c per channel."""

    def __init__(self, model: nn.Module, gains: list[float]):
        super().__init__()
        self.model = model
        self.register_buffer("gain", torch.tensor(gains).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.gain)


def export_coreml(model: nn.Module, config: dict[str, Any], img_size: int, path: Path, int8: bool) -> dict[str, Any]:
    try:
        import coremltools as ct
    except ImportError:
        raise UserError("CoreML export needs coremltools: pip install 'skipnet-deploy[coreml]'") from None
    mean, std = config["mean"], config["std"]
    # image x in 0..255: CoreML computes x * scale + bias_c; (x/255 - m_c)/s_c = (x*scale + bias_c) * s0/s_c.
    scale, bias = 1.0 / (255.0 * std[0]), [-m / std[0] for m in mean]
    gains = [std[0] / s for s in std]
    net = model if all(abs(g - 1) < 1e-12 for g in gains) else _ChannelGain(model, gains)
    mlmodel = _convert(net, config, img_size, scale, bias, ct.target.iOS16)
    if int8:  # weights to int8; CoreML's activation quantisation needs calibration on a Mac
        from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

        mlmodel = linear_quantize_weights(
            mlmodel, OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8"))
        )
    _save(mlmodel, config, img_size, path)
    return {"scale": scale, "bias": bias, "channel_gain": gains}


def export_coreml_w8a8(graph, config: dict[str, Any], img_size: int, path: Path) -> dict[str, Any]:
    """``graph`` (a trained FakeQuantGraph) as a W8A8 mlprogram; the graph normalises the pixels itself."""
    try:
        import coremltools as ct
    except ImportError:
        raise UserError("CoreML export needs coremltools: pip install 'skipnet-deploy[coreml]'") from None
    from .fake_quant import NCHWInput

    graph.quantize, graph.explicit, graph.features_tensor = True, True, None
    graph.weights.requires_grad_(False)
    try:
        # quantize/dequantize are iOS 17 ops
        _save(
            _convert(NCHWInput(graph), config, img_size, 1.0, [0.0, 0.0, 0.0], ct.target.iOS17), config, img_size, path
        )
    finally:
        graph.explicit = False
    return {"scale": 1.0, "bias": [0.0, 0.0, 0.0], "channel_gain": [1.0, 1.0, 1.0], "in_graph": "mean and std"}


def _convert(net: nn.Module, config: dict[str, Any], img_size: int, scale: float, bias: list[float], target):
    import coremltools as ct

    with warnings.catch_warnings():  # the tracer's notes on shapes that are fixed here anyway, and
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # torch's deprecation of quantised tensors
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions", category=UserWarning)
        traced = torch.jit.trace(net.eval(), torch.rand(1, 3, img_size, img_size) * 255)
    return ct.convert(
        traced,
        inputs=[
            ct.ImageType(
                name="image", shape=(1, 3, img_size, img_size), scale=scale, bias=bias, color_layout=ct.colorlayout.RGB
            )
        ],
        classifier_config=ct.ClassifierConfig(list(config["class_names"])),
        convert_to="mlprogram",
        minimum_deployment_target=target,
    )


def _save(mlmodel, config: dict[str, Any], img_size: int, path: Path) -> None:
    mlmodel.short_description = f"SkipNet Deploy {config['model']} ({config['dataset']}), {img_size}x{img_size} RGB"
    mlmodel.user_defined_metadata["skipnet_config"] = json.dumps(config)
    mlmodel.user_defined_metadata["preprocess"] = json.dumps(config["preprocess"])
    with atomic_dir(path) as tmp:
        mlmodel.save(str(tmp))


def validate_coreml(path: Path, img_size: int, labels: list[str], w8a8: bool = False) -> dict[str, Any]:
    """What can be checked without macOS: the saved spec's input, outputs, labels and metadata, and
    for a W8A8 model that its weights and activations are int8."""
    import coremltools as ct

    spec = ct.models.utils.load_spec(str(path))
    inp = spec.description.input[0]
    image = inp.type.imageType
    checks = {
        "mlprogram": spec.WhichOneof("Type") == "mlProgram",
        "image_input": inp.type.WhichOneof("Type") == "imageType"
        and image.width == img_size
        and image.height == img_size,
        "classifier_outputs": spec.description.predictedFeatureName == "classLabel",
        "labels_in_metadata": json.loads(spec.description.metadata.userDefined["skipnet_config"])["class_names"]
        == labels,
    }
    census = w8a8_census(spec) if w8a8 else None
    if census is not None:
        checks["activations_int8"] = census["quantize_ops"] > 0 and census["layers_on_int8_activations"] > 0
        checks["weights_int8"] = census["int8_weight_ops"] > 0
    report: dict[str, Any] = {"spec_checks": checks, "passed": all(checks.values())}
    if census is not None:
        report["w8a8"] = census
    if sys.platform != "darwin":
        report["numeric"] = "skipped: CoreML models run only on macOS"
    return report


def w8a8_census(spec) -> dict[str, int]:
    """What in an mlprogram is int8: activations quantised (``quantize`` ops to int8), weights stored
    as int8 (constexpr dequantisation), and the convolutions and linear layers whose input is a
    dequantised int8 activation, of all of them."""
    from coremltools.proto import MIL_pb2

    ops = [
        op for f in spec.mlProgram.functions.values() for b in f.block_specializations.values() for op in b.operations
    ]
    made_by = {out.name: op for op in ops for out in op.outputs}
    int8 = MIL_pb2.DataType.Value("INT8")
    layers = [op for op in ops if op.type in ("conv", "linear")]
    return {
        "quantize_ops": sum(op.type == "quantize" and op.outputs[0].type.tensorType.dataType == int8 for op in ops),
        "int8_weight_ops": sum(op.type.startswith("constexpr_") and "dequantize" in op.type for op in ops),
        "layers": len(layers),
        "layers_on_int8_activations": sum(_source(op, made_by) == "dequantize" for op in layers),
    }


def _source(op, made_by) -> str:
    """The op type that computes a layer's input, looking through layout ops (which keep int8 values)."""
    while True:
        op = made_by.get(op.inputs["x"].arguments[0].name)
        if op is None or op.type not in ("transpose", "pad", "reshape", "squeeze", "expand_dims"):
            return getattr(op, "type", "")
