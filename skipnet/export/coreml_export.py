"""CoreML (mlprogram, iOS 16+): an image input whose normalisation is CoreML's own scale/bias,
classifier labels, and SkipNet metadata. Runs only on macOS; on Linux the spec is validated."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..common import UserError, atomic_dir


class CoreMLExporter:
    """An mlprogram classifier with an image input (iOS 16+); int8 means int8 weights."""

    def write(self, job, path: Path) -> dict[str, Any]:
        int8 = job.fmt.precision == "int8"
        norm = export_coreml(job.model, job.config, job.img_size, path, int8)
        return {"input": {"name": "image", "layout": "image (RGB)", "dtype": "image",
                          "shape": [1, 3, job.img_size, job.img_size], "range": [0, 255], "quantization": None,
                          "normalization": norm},
                "output": {"name": "classLabel", "dtype": "string", "probabilities": "classLabel_probs"},
                "weights": "int8" if int8 else "float16"}


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
    traced = torch.jit.trace(net.eval(), torch.rand(1, 3, img_size, img_size))
    mlmodel = ct.convert(
        traced,
        inputs=[ct.ImageType(name="image", shape=(1, 3, img_size, img_size), scale=scale, bias=bias,
                             color_layout=ct.colorlayout.RGB)],
        classifier_config=ct.ClassifierConfig(list(config["class_names"])),
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS16,
    )
    if int8:  # weights to int8; CoreML's activation quantisation needs calibration on a Mac
        from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

        mlmodel = linear_quantize_weights(mlmodel, OptimizationConfig(
            global_config=OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8")))
    mlmodel.short_description = f"SkipNet Deploy {config['model']} ({config['dataset']}), {img_size}x{img_size} RGB"
    mlmodel.user_defined_metadata["skipnet_config"] = json.dumps(config)
    mlmodel.user_defined_metadata["preprocess"] = json.dumps(config["preprocess"])
    with atomic_dir(path) as tmp:
        mlmodel.save(str(tmp))
    return {"scale": scale, "bias": bias, "channel_gain": gains}


def validate_coreml(path: Path, img_size: int, labels: list[str]) -> dict[str, Any]:
    """What can be checked without macOS: the saved spec's input, outputs, labels and metadata."""
    import coremltools as ct

    spec = ct.models.utils.load_spec(str(path))
    inp = spec.description.input[0]
    image = inp.type.imageType
    checks = {
        "mlprogram": spec.WhichOneof("Type") == "mlProgram",
        "image_input": inp.type.WhichOneof("Type") == "imageType" and image.width == img_size
        and image.height == img_size,
        "classifier_outputs": spec.description.predictedFeatureName == "classLabel",
        "labels_in_metadata": json.loads(spec.description.metadata.userDefined["skipnet_config"])["class_names"]
        == labels,
    }
    report: dict[str, Any] = {"spec_checks": checks, "passed": all(checks.values())}
    if sys.platform != "darwin":
        report["numeric"] = "skipped: CoreML models run only on macOS"
    return report
