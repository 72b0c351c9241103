"""The format table: every model format the toolkit writes, runs or times, in one place.

A format's name is what users type (`skipnet-export --format tflite-int8`, the pipeline's
`export: formats:`, `skipnet-bench --formats`); its backend picks the exporter (skipnet.export)
and the runtime (skipnet.runtime); its extension names the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError


@dataclass(frozen=True)
class Format:
    name: str
    backend: str  # "torch", "onnx", "tflite" or "coreml": the exporter and runtime that handle it
    extension: str  # "" for a run directory (PyTorch)
    precision: str  # "float32" or "int8"
    int8: str | None = None  # how: "ptq" (post-training), "qat" (quantisation-aware), "weights" (weights only)
    macos_only: bool = False  # runs (and so can be timed or checked numerically) only on macOS

    @property
    def exported(self) -> bool:
        return self.backend != "torch"

    @property
    def needs_calibration(self) -> bool:
        return self.int8 in ("ptq", "qat")


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("torch", "torch", "", "float32"),
        Format("onnx", "onnx", ".onnx", "float32"),
        Format("onnx-int8", "onnx", ".onnx", "int8", "ptq"),
        Format("onnx-int8-qat", "onnx", ".onnx", "int8", "qat"),
        Format("tflite", "tflite", ".tflite", "float32"),
        Format("tflite-int8", "tflite", ".tflite", "int8", "ptq"),
        Format("tflite-int8-qat", "tflite", ".tflite", "int8", "qat"),
        Format("coreml", "coreml", ".mlpackage", "float32", None, macos_only=True),
        Format("coreml-int8", "coreml", ".mlpackage", "int8", "weights", macos_only=True),
        Format("coreml-int8-qat", "coreml", ".mlpackage", "int8", "qat", macos_only=True),
    )
}
EXPORT_FORMATS = [name for name, f in FORMATS.items() if f.exported]
BACKENDS = list(dict.fromkeys(f.backend for f in FORMATS.values() if f.exported))


def get_format(name: str, what: str = "format") -> Format:
    if name not in FORMATS:
        raise UserError(f"unknown {what} {name!r}; choose one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def export_format(name: str, int8: bool = False, qat: bool = False) -> Format:
    """The row for skipnet-export's `--format BACKEND [--int8] [--qat-epochs N]`, or for a full name."""
    if name in BACKENDS:
        if qat and not int8:
            raise UserError("--qat-epochs fine-tunes for int8: add --int8")
        return FORMATS[name + ("-int8" if int8 else "") + ("-qat" if qat else "")]
    fmt = FORMATS.get(name)
    if fmt is None or not fmt.exported:
        raise UserError(f"unknown format {name!r}; choose one of: {', '.join(EXPORT_FORMATS)}")
    if (int8 and fmt.precision != "int8") or (qat and fmt.int8 != "qat"):
        raise UserError(
            f"--format {name} is not the int8/QAT variant the other flags ask for; use "
            f"--format {fmt.backend} with --int8/--qat-epochs, or the full name alone"
        )
    return fmt


def format_of_path(path: str | Path) -> Format:
    """The backend row for a model path: a run directory is PyTorch, a file goes by its extension."""
    path = Path(path)
    for f in FORMATS.values():
        if f.extension and f.extension == path.suffix:
            return FORMATS[f.backend]
    if path.is_dir():
        return FORMATS["torch"]
    known = sorted({f.extension for f in FORMATS.values() if f.extension})
    raise UserError(
        f"cannot run {path}: unknown model format {path.suffix or '(no extension)'}; "
        f"pass a run directory or one of: {', '.join(known)}"
    )
