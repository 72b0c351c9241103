"""Runtime stage: one predictor over every format.

    predictor = skipnet.load("exports/s.onnx")      # or a run directory
    predictor.predict("shirt.png")[0].top1
"""
from __future__ import annotations

import os
from pathlib import Path

from .predictor import ModelLoadError, Prediction, Predictor

FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".mlpackage": "coreml"}


def load(path: str | os.PathLike, threads: int | None = None, config: dict | None = None) -> Predictor:
    """A Predictor for a run directory (PyTorch) or an exported model file.

    ``config`` overrides the metadata read from the file or its NAME.EXT.json sidecar.
    """
    from .backends import CoreMLBackend, OnnxBackend, TFLiteBackend, TorchBackend

    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model {path} does not exist; pass a run directory or an exported model file")
    if path.is_dir() and path.suffix != ".mlpackage":  # a CoreML package is a directory too
        backend = TorchBackend(path, threads)
        return Predictor(backend, backend.config)
    if path.suffix == ".mlpackage":
        import sys

        if sys.platform != "darwin":
            raise ModelLoadError(f"{path}: CoreML models run only on macOS; on this machine use the .tflite or "
                                 ".onnx export of the same run")
    backends = {".onnx": OnnxBackend, ".tflite": TFLiteBackend, ".mlpackage": CoreMLBackend}
    if path.suffix in backends:
        backend = backends[path.suffix](path, threads, config)
        return Predictor(backend, backend.config)
    raise ModelLoadError(f"cannot run {path}: unknown model format {path.suffix or '(no extension)'}; "
                         f"pass a run directory or one of: {', '.join(FORMATS)}")


__all__ = ["ModelLoadError", "Prediction", "Predictor", "load"]
