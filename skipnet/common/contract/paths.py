"""Path rules: the files of a run directory, the names of exported files, and the checks every
output path passes before any work starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import UserError
from ..io import check_room, nearest_existing
from .formats import Format

SMALL_FILE = 64 << 10  # room any output file needs at least (a JSON report, a plot)

# A run directory (skipnet-train --out DIR).
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "trainer_state.pt"
METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
LOCK_FILE = ".skipnet.lock"  # held while a process writes the directory (locks.exclusive)
RUN_FILES = (WEIGHTS_FILE, CONFIG_FILE, STATE_FILE, METRICS_FILE)

# A pipeline directory (skipnet-pipeline --out DIR).
PIPELINE_FILE = "pipeline.json"


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """``NAME.EXT.json`` beside ``NAME.EXT``: NAME.tflite and NAME.onnx of one run must not share a sidecar."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def export_name(stem: str, fmt: Format) -> str:
    """``s_int8_qat.tflite`` for run ``s`` in tflite-int8-qat: the format is readable from the name."""
    return f"{stem}{'_int8' if fmt.precision == 'int8' else ''}{'_qat' if fmt.int8 == 'qat' else ''}{fmt.extension}"


def default_export_path(run_dir: str | os.PathLike, fmt: Format) -> Path:
    return Path("exports") / export_name(Path(run_dir).resolve().name, fmt)


def temp_files(directory: Path, names: tuple[str, ...] | list[str]) -> list[Path]:
    """Temporary files that io.atomic_path left for ``names`` in ``directory`` (``.NAME.XXXX.tmp``):
    what a killed writer of ours leaves behind, and nothing else."""
    if not directory.is_dir():
        return []
    return [p for name in names for p in directory.glob(f".{name}.*.tmp") if p.is_file()]


def check_writable_dir(path: str | os.PathLike, flag: str, shown: str | os.PathLike | None = None) -> None:
    """``path`` is, or can be created as, a directory we can write in (``shown``: the path the user gave)."""
    path = Path(path)
    shown = path if shown is None else shown
    base = nearest_existing(path)
    if not base.is_dir():
        raise UserError(f"{flag} {shown}: {os.path.relpath(base)} is a file, not a directory; choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".skipnet-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{flag} {shown}: cannot write in {base} ({e.strerror}); choose a writable location") from None


def check_output_file(
    path: str | os.PathLike, flag: str, directory_ok: bool = False, suffix: str | None = None
) -> Path:
    """``path`` can be written as a file (or, with ``directory_ok``, a package directory), before any work;
    with ``suffix``, its name must end in it (a PNG plot under another name would mislead)."""
    raw, path = os.fspath(path), Path(path)
    if suffix is not None and path.suffix.lower() != suffix:
        raise UserError(f"{flag} {path} must end in {suffix}: the file is written as {suffix[1:].upper()}")
    if raw.endswith(("/", os.sep)) or path.name in ("", ".", ".."):
        raise UserError(f"{flag} {path} names a directory; give a file path")
    if path.is_dir() and not directory_ok:
        raise UserError(f"{flag} {path} is a directory; give a file path")
    if path.exists() and not directory_ok and not path.is_file():
        raise UserError(f"{flag} {path} is not a regular file; give a file path")
    check_writable_dir(path.parent, flag, shown=raw)
    check_room(path, SMALL_FILE)  # a full disk is found before the work, not after it
    return path


def check_run_out(out: str | os.PathLike, resume: bool, overwrite: bool, flag: str = "--out") -> None:
    """``out`` may be written as a run directory: a new or empty directory, or a run of ours (one that
    ``resume`` continues or ``overwrite`` replaces). A folder holding anything else is refused untouched."""
    out = Path(out)
    check_writable_dir(out, flag)
    others = _foreign_files(out)
    if others:
        raise UserError(
            f"{flag} {out} holds files that are not a skipnet-train run (e.g. {others[0]}); "
            "choose a new or empty directory"
        )
    has_state = (out / STATE_FILE).is_file()
    if resume and not has_state:
        raise UserError(f"nothing to resume in {out} (no {STATE_FILE}); run without --resume to start a new run")
    if not resume and not overwrite and (has_state or (out / CONFIG_FILE).exists()):
        raise UserError(f"{out} already holds a run; pass --resume to continue it or --overwrite to start over")


def remove_if_unused(out: Path, names: tuple[str, ...] = RUN_FILES) -> None:
    """Remove a directory that holds nothing but our lock and temporary files of ``names`` (one we made
    for a run or pipeline that failed before writing anything); anything else in it keeps it."""
    ours = {LOCK_FILE, *(p.name for p in temp_files(out, names))}
    if out.is_dir() and all(p.name in ours for p in out.iterdir()):
        for name in ours:
            (out / name).unlink(missing_ok=True)
        out.rmdir()


def _foreign_files(out: Path) -> list[str]:
    """Names in ``out`` that make it someone else's folder; none for a run of ours or an empty folder."""
    if not out.is_dir():
        return []
    ours = {LOCK_FILE, *(p.name for p in temp_files(out, RUN_FILES))}
    names = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if not names or (out / STATE_FILE).is_file() or _is_run_config(out / CONFIG_FILE):
        return []
    return names


def _is_run_config(path: Path) -> bool:
    import json

    from .schemas import RunConfig

    try:
        RunConfig.model_validate(json.loads(path.read_text(encoding="utf-8")))
        return True
    except Exception:  # missing, unreadable, not JSON or not ours: all mean "not a run config"
        return False
