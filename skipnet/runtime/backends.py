"""Runtime backends: PyTorch run directories and ONNX files (more formats arrive with the export stage)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models import PixelModel, load_checkpoint
from .predictor import ModelLoadError, read_sidecar


class TorchBackend:
    format = "torch"
    precision = "float32"

    def __init__(self, run_dir: Path, threads: int | None = None):
        model, self.config = load_checkpoint(run_dir)
        self.model = PixelModel(model, self.config["mean"], self.config["std"], layout="nhwc").eval()
        self.threads = threads

    @torch.inference_mode()
    def logits(self, pixels: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(np.ascontiguousarray(pixels))).float().numpy()


class OnnxBackend:
    format = "onnx"

    def __init__(self, path: Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelLoadError("running .onnx models needs onnxruntime: pip install 'skipnet-deploy[export]'") from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own pybind exception types for bad files
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"{path} is not a loadable ONNX model ({first}); re-export it") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.config = _config_from(meta.get("skipnet_config"), path)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.precision = self.config.get("precision", "float32")
        self.nhwc = self.config.get("input", {}).get("layout", "NCHW") == "NHWC"

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels if self.nhwc else pixels.transpose(0, 3, 1, 2)
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def _config_from(embedded: str | None, path: Path) -> dict[str, Any]:
    if embedded:
        try:
            return json.loads(embedded)
        except json.JSONDecodeError:
            pass
    side = read_sidecar(path)
    if side is None:
        raise ModelLoadError(f"{path} has no SkipNet metadata and no {path.with_suffix('.json').name} beside it; "
                             "export it with skipnet-export")
    return side
