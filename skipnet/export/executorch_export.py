"""ExecuTorch (.pte): torch.export -> edge dialect lowered to the XNNPACK delegate -> .pte program.

Input: uint8 NHWC raw RGB pixels 0..255, batch 1 - the bytes an app has at hand (an Android
Bitmap's or an iOS pixel buffer's RGB channels, interleaved), copied in without a conversion
loop; the cast and the normalisation are the graph's first ops. Output: float32 logits.

int8 is PT2E post-training quantisation with ExecuTorch's XNNPACK quantizer: int8 weights per
output channel, int8 activations per tensor whose ranges are the minimum and maximum over every
calibration image (as the TFLite calibration does). QAT is not offered for this backend (its
record has no "qat" variant), so `--qat-epochs` is refused before any work.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..common import UserError, atomic_path
from ..common.io import native_stderr_to


class _Uint8Pixels(nn.Module):
    """uint8 NHWC pixels into the float raw-pixel front end (PixelModel)."""

    def __init__(self, pixel_model: nn.Module):
        super().__init__()
        self.pixel_model = pixel_model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.pixel_model(pixels.to(torch.float32))


class _GlobalMean(nn.Module):
    """AdaptiveAvgPool2d(1) as a mean over H and W: torch.export decomposes the pool into a view
    (as_strided) that XNNPACK does not take, which split the graph at every squeeze-excite."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class _HardSigmoid(nn.Module):
    """relu6(x + 3) / 6 in ops XNNPACK takes in int8; nn.Hardsigmoid's decomposition leaves its
    constants to the portable kernels, one copy per squeeze-excite per call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x + 3.0, 0.0, 6.0) * (1.0 / 6.0)


def xnnpack_friendly(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the float-exact swaps that let XNNPACK take the whole graph in one
    partition (SkipNet and MobileNetV3: 10 partitions and 26 portable ops without them, 1 and 1 with)."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size in (1, (1, 1)):
                setattr(parent, name, _GlobalMean())
            elif isinstance(child, nn.Hardsigmoid):
                setattr(parent, name, _HardSigmoid())
    return model


class ExecuTorchExporter:
    """uint8 NHWC pixels in (batch 1), float32 logits out, lowered to XNNPACK; int8 by PT2E."""

    def write(self, job, path: Path) -> dict[str, Any]:
        from ..runtime.executorch_runtime import size_thread_pool

        _executorch()
        size_thread_pool()  # before lowering: the parity and speed checks run the files in this process
        net = _Uint8Pixels(job.pixel_model("nhwc", model=xnnpack_friendly(job.model))).eval()
        example = (torch.zeros((1, job.img_size, job.img_size, 3), dtype=torch.uint8),)
        spec = job.pixel_io("NHWC", "uint8", "logits")
        int8 = job.fmt.precision == "int8"
        if not int8 or job.float_copy is not None:
            float_ops = lower(export_program(net, example), job.float_copy if int8 else path)
            if not int8:
                spec["delegation"] = float_ops
                return spec
        spec["delegation"] = lower(export_program(quantize(net, example, job.calibration), example), path)
        spec["quantization"] = "PT2E, XNNPACK quantizer: int8 weights per channel, int8 activations (min/max)"
        return spec


def _executorch():
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise UserError("ExecuTorch export needs executorch: pip install 'skipnet-deploy[executorch]'") from None
    return to_edge_transform_and_lower, XnnpackPartitioner


def export_program(net: nn.Module, example: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    with _quiet():
        return torch.export.export(net, example)


def quantize(net: nn.Module, example: tuple[torch.Tensor, ...], calibration: np.ndarray) -> nn.Module:
    """PT2E: observers inserted by the XNNPACK quantizer, every calibration image run through once,
    then the quantise/dequantise pairs the XNNPACK partitioner turns into int8 kernels."""
    _executorch()
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import MinMaxObserver
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = get_symmetric_quantization_config(is_per_channel=True)
    # Min/max over all the images instead of the default histogram: every activation range spans
    # what calibration saw, the same rule as the TFLite calibration.
    act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    config = dataclasses.replace(config, input_activation=act, output_activation=act)
    with _quiet():
        prepared = prepare_pt2e(export_program(net, example).module(), XNNPACKQuantizer().set_global(config))
        with torch.no_grad():
            for i in range(len(calibration)):
                prepared(torch.from_numpy(np.ascontiguousarray(calibration[i : i + 1])))
        return convert_pt2e(prepared)


def lower(program: torch.export.ExportedProgram, path: Path) -> dict[str, Any]:
    """Lower ``program`` to XNNPACK and write the .pte at ``path`` (whole or not at all); returns
    what runs in XNNPACK and what is left to ExecuTorch's portable kernels."""
    to_edge_transform_and_lower, partitioner = _executorch()
    with _quiet():
        edge = to_edge_transform_and_lower(program, partitioner=[partitioner()])
        census = delegation(edge.exported_program())
        buffer = edge.to_executorch().buffer
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buffer)
    return census


def delegation(program) -> dict[str, Any]:
    """What runs where in a lowered program: its XNNPACK partitions and the ops inside them, and
    the ops left to ExecuTorch's portable kernels (by name)."""
    portable, partitions, delegated = Counter(), 0, 0
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target.__name__ == "getitem":
            continue
        if node.target.__name__ == "executorch_call_delegate":
            partitions += 1
        else:
            portable[str(node.target.__name__)] += 1
    for _, lowered in program.graph_module.named_children():
        delegated += sum(1 for n in lowered.original_module.graph.nodes if n.op == "call_function")
    return {
        "delegate": "XnnpackBackend",
        "partitions": partitions,
        "delegated_nodes": delegated,
        "portable_nodes": sum(portable.values()),
        "portable_ops": dict(sorted(portable.items())),
    }


class _quiet:
    """torch.export / ExecuTorch lowering without their INFO and deprecation chatter on stderr."""

    def __enter__(self):
        self._log = []
        self._native = native_stderr_to(self._log, replay_on_error=True)
        self._native.__enter__()
        self._level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        logging.getLogger().setLevel(self._level)
        return self._native.__exit__(*exc)
