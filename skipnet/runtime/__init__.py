"""Runtime stage: one predictor over every format.

Usage:

    predictor = skipnet.load("exports/s.onnx")      # or a run directory
    predictor.predict("shirt.png")[0].top1
"""

from __future__ import annotations

import os
from pathlib import Path

from ..common import UserError
from ..common.contract import FORMATS, format_of_path
from ..common.contract.backends import RECORDS
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
    if not fmt.runs_here:
        others = " or ".join(f.extension for f in FORMATS.values() if f.exported and f.runs_here and not f.int8)
        raise ModelLoadError(
            f"{path}: {fmt.record.title} models run only on {fmt.record.where}; on this machine use the "
            f"{others} export of the same run"
        )
    if threads is not None and threads < 1:
        raise ModelLoadError(f"threads must be positive, got {threads}; leave it out for the runtime's default")
    if not fmt.exported:
        from .backends import TorchBackend

        backend_class = TorchBackend
    else:  # a runtime that is not installed says which extra installs it
        backend_class = fmt.record.runtime_class()
    if runtime is not None:
        backend_class = _runtime_backend(path, fmt, runtime)
    if platform not in (None, "host"):
        backend_class = _platform_backend(path, fmt, runtime, platform)
    backend = backend_class(path, threads, config or model_config(path, fmt))
    check_fits(path, backend)
    return Predictor(backend, backend.config)


def _runtime_backend(path: Path, fmt, runtime: str) -> type:
    choices = fmt.record.runtimes if fmt.exported else {}
    if not choices:
        with_choices = [b.extension for b in RECORDS if b.runtimes]
        raise ModelLoadError(
            f"{path} is a {fmt.name} model, which runs only in its own runtime: leave the "
            f"runtime out (runtime {runtime!r} is for {', '.join(with_choices)} models)"
        )
    if runtime not in choices:
        raise ModelLoadError(f"runtime {runtime!r} does not run {fmt.name} models; choose one of: {', '.join(choices)}")
    return fmt.record.runtime_class(runtime=runtime)


def _platform_backend(path: Path, fmt, runtime: str | None, platform: str) -> type:
    names = sorted({name for b in RECORDS for name in b.platforms})
    if platform not in names:
        raise ModelLoadError(f"unknown platform {platform!r}; choose host or {', '.join(names)}")
    if not fmt.exported or platform not in fmt.record.platforms:
        formats = [b.extension for b in RECORDS if platform in b.platforms]
        raise ModelLoadError(
            f"{path} is a {fmt.name} model; the {platform} platform runs only "
            f"{', '.join(formats)} files: export one, or leave --platform out"
        )
    if runtime is not None:
        raise ModelLoadError(
            f"the {platform} platform runs {fmt.record.title} files in their own runtime only: leave --runtime "
            f"{runtime} out"
        )
    return fmt.record.runtime_class(platform=platform)


__all__ = ["ModelLoadError", "Prediction", "Predictor", "load"]
