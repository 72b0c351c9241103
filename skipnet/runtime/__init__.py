"""Runtime stage: one predictor over every format.

Usage:

    predictor = skipnet.load("exports/s.onnx")      # or a run directory
    predictor.predict("shirt.png")[0].top1
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..common import UserError
from ..common.contract import format_of_path
from ..common.io import refuse_special_file
from .predictor import ModelLoadError, Prediction, Predictor, check_fits, model_config


def load(
    path: str | os.PathLike,
    threads: int | None = None,
    config: dict | None = None,
    runtime: str | None = None,
    platform: str | None = None,
) -> Predictor:
    """A Predictor for a run directory (PyTorch) or an exported model file.

    ``config`` overrides the metadata read from the file or its NAME.EXT.json sidecar (which must
    describe this very file: a sidecar left beside another model is refused). ``runtime`` picks
    another runtime for the format (``"mediapipe"`` for a .tflite: MediaPipe's ImageClassifier).
    ``platform="arm64"`` runs a .tflite in LiteRT's aarch64 build under emulation (arm64.py; set up
    on first use); ``None`` or ``"host"`` runs it on this machine.
    """
    from .backends import BACKENDS, PLATFORMS, RUNTIMES

    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model {path} does not exist; pass a run directory or an exported model file")
    try:
        refuse_special_file(path)
    except UserError as e:
        raise ModelLoadError(str(e)) from None
    try:
        fmt = format_of_path(path)
    except UserError as e:
        raise ModelLoadError(str(e)) from None
    if fmt.macos_only and sys.platform != "darwin":
        raise ModelLoadError(
            f"{path}: CoreML models run only on macOS; on this machine use the .tflite or .onnx export of the same run"
        )
    if threads is not None and threads < 1:
        raise ModelLoadError(f"threads must be positive, got {threads}; leave it out for the runtime's default")
    backend_class = BACKENDS[fmt.backend]
    if runtime is not None:
        choices = RUNTIMES.get(fmt.backend, {})
        if not choices:
            raise ModelLoadError(
                f"{path} is a {fmt.name} model, which runs only in its own runtime: leave the "
                f"runtime out (runtime {runtime!r} is for {', '.join(RUNTIMES)} models)"
            )
        if runtime not in choices:
            raise ModelLoadError(
                f"runtime {runtime!r} does not run {fmt.name} models; choose one of: {', '.join(choices)}"
            )
        backend_class = choices[runtime]
    if platform not in (None, "host"):
        backend_class = _platform_backend(path, fmt, runtime, platform, PLATFORMS)
    backend = backend_class(path, threads, config or model_config(path, fmt))
    check_fits(path, backend)
    return Predictor(backend, backend.config)


def _platform_backend(path: Path, fmt, runtime: str | None, platform: str, platforms: dict) -> type:
    names = sorted({name for choices in platforms.values() for name in choices})
    if platform not in names:
        raise ModelLoadError(f"unknown platform {platform!r}; choose host or {', '.join(names)}")
    if platform not in platforms.get(fmt.backend, {}):
        formats = [f for f, choices in platforms.items() if platform in choices]
        raise ModelLoadError(
            f"{path} is a {fmt.name} model; the {platform} platform runs only "
            f"{', '.join('.' + f for f in formats)} files: export one, or leave --platform out"
        )
    if runtime is not None:
        raise ModelLoadError(f"the {platform} platform runs LiteRT only: leave --runtime {runtime} out")
    return platforms[fmt.backend][platform]


__all__ = ["ModelLoadError", "Prediction", "Predictor", "load"]
