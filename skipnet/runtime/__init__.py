"""Runtime stage: one predictor over every format.

    predictor = skipnet.load("exports/s.onnx")      # or a run directory
    predictor.predict("shirt.png")[0].top1
"""
from __future__ import annotations

import os
from pathlib import Path

from .predictor import ModelLoadError, Prediction, Predictor

FORMATS = {".onnx": "onnx", ".tflite": "tflite"}


def load(path: str | os.PathLike, threads: int | None = None, config: dict | None = None) -> Predictor:
    """A Predictor for a run directory (PyTorch) or an exported model file.

    ``config`` overrides the metadata read from the file or its NAME.EXT.json sidecar.
    """
    from .backends import OnnxBackend, TFLiteBackend, TorchBackend

    path = Path(path)
    if path.is_dir():
        backend = TorchBackend(path, threads)
        return Predictor(backend, backend.config)
    if not path.exists():
        raise ModelLoadError(f"model {path} does not exist; pass a run directory or an exported model file")
    backends = {".onnx": OnnxBackend, ".tflite": TFLiteBackend}
    if path.suffix in backends:
        backend = backends[path.suffix](path, threads, config)
        return Predictor(backend, backend.config)
    raise ModelLoadError(f"cannot run {path}: unknown model format {path.suffix or '(no extension)'}; "
                         f"pass a run directory or one of: {', '.join(FORMATS)}")


__all__ = ["ModelLoadError", "Prediction", "Predictor", "load"]
