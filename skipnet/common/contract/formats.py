"""The format table: every model format the toolkit writes, runs or times, in one place.

A format's name is what users type (`skipnet-export --format tflite-int8`, the pipeline's
`export: formats:`, `skipnet-bench --formats`); its backend's record (backends.py) picks the
exporter (skipnet.export) and the runtime (skipnet.runtime); its extension names the file. The
table is derived from the records: a backend's float format, and one per int8 variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .backends import BACKEND_RECORDS, RECORDS, Backend


@dataclass(frozen=True)
class Format:
    name: str
    backend: str  # "torch", "onnx", "tflite" or "coreml": the exporter and runtime that handle it
    extension: str  # "" for a run directory (PyTorch)
    precision: str  # "float32" or "int8"
    int8: str | None = None  # how: "ptq" (post-training), "qat" (quantisation-aware), "weights" (weights only)

    @property
    def exported(self) -> bool:
        return self.backend in BACKEND_RECORDS

    @property
    def record(self) -> Backend:
        """The backend's record; only for exported formats (a run directory has none)."""
        return BACKEND_RECORDS[self.backend]

    @property
    def runs_here(self) -> bool:
        """Whether its runtime runs on this OS (and so whether it can be timed or checked numerically here)."""
        return not self.exported or self.record.runs_here

    @property
    def needs_calibration(self) -> bool:
        return self.int8 in ("ptq", "qat")


def _formats(b: Backend) -> list[Format]:
    """A backend's float format, its post-training int8 one (calibrated, or weights only) and its QAT one."""
    out = [Format(b.name, b.name, b.extension, "float32")]
    out += [Format(f"{b.name}-int8", b.name, b.extension, "int8", v) for v in b.int8 if v != "qat"]
    out += [Format(f"{b.name}-int8-qat", b.name, b.extension, "int8", "qat") for v in b.int8 if v == "qat"]
    return out


# "torch": the run directory itself (PyTorch), the source of every export.
FORMATS: dict[str, Format] = {
    f.name: f for f in [Format("torch", "torch", "", "float32"), *(f for b in RECORDS for f in _formats(b))]
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
        full = name + ("-int8" if int8 else "") + ("-qat" if qat else "")
        if full not in FORMATS:
            able = [f.backend for f in FORMATS.values() if f.int8 == ("qat" if qat else "ptq")]
            raise UserError(
                f"--format {name} has no {'QAT' if qat else 'int8'} export; "
                f"{'QAT' if qat else 'int8'} is exported for --format {', '.join(able)}"
            )
        return FORMATS[full]
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
