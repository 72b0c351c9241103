"""Export stage: a run directory -> a mobile model file + NAME.EXT.json sidecar, checked for parity.

    result = skipnet.export.export("runs/s", "tflite-int8")   # exports/s_int8.tflite + .json
    result.parity["passed"]

The formats are the contract's table (skipnet.common.contract.FORMATS); each backend's converter
is the Exporter its record names (skipnet.common.contract.backends). The model and its sidecar
are built in a staging folder beside the target and moved in model first, sidecar last: the
sidecar records the model's size and sha256, so after a crash at any moment a loader finds the
old pair, the new pair, or a mismatch it refuses.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import __version__
from ..common import UserError, write_json
from ..common.contract import (
    WEIGHTS_FILE,
    Format,
    Sidecar,
    default_export_path,
    exclusive,
    export_format,
    output_lock,
    parse,
    sidecar_path,
)
from ..common.contract.backends import RECORDS
from ..common.contract.backends import backend as backend_record
from ..common.contract.paths import check_output_file
from ..common.io import as_disk_full, check_room, crash_point, file_record, read_json
from ..data import build_datasets, sample_pixels
from ..models import count_macs, count_params, load_checkpoint
from .options import Exporter, ExportJob, ExportOptions
from .speed import speed_check

# torchao (imported by litert-torch) registers an Enum the way torch 2.14 deprecates; the warning
# is not the user's to act on and would make every export's stderr, errors included, noisier.
logging.getLogger("torch.utils._pytree").addFilter(lambda r: "is an Enum subclass" not in r.getMessage())


def get_exporter(backend: str) -> Exporter:
    """The converter of an exported backend (its record's exporter), imported only when used."""
    return backend_record(backend).exporter_class()()


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    parity: dict[str, Any] | None
    seconds: float
    speed: dict[str, Any] | None = None  # int8 against float on this host (speed.py); None for float
    qat: dict[str, Any] | None = None  # the sidecar's qat block; None without QAT


def export(
    run_dir: str | os.PathLike,
    format: str,
    out: str | os.PathLike | None = None,
    options: ExportOptions | None = None,
    **flags: Any,
) -> ExportResult:
    """Export ``run_dir`` to ``format`` (a backend such as "tflite" with ``int8=True``, or a table name
    such as "tflite-int8") at ``out`` (default exports/RUN[_int8][_qat].EXT). ``flags`` are
    ExportOptions fields, for callers that do not build the object."""
    t0 = time.perf_counter()
    opts = replace(options or ExportOptions(), **flags).check()
    fmt = export_format(format, opts.int8, opts.qat_epochs > 0)
    _check_format_flags(opts, fmt)
    fmt.record.require(f"--format {fmt.name}")  # before reading the run: a missing extra fails in a second
    if fmt.int8 == "qat" and not opts.qat_epochs:
        opts = replace(opts, qat_epochs=1)
    model, config = load_checkpoint(run_dir)
    img_size = _img_size(model, config, opts.img_size)
    path = _target(run_dir, fmt, out)
    with exclusive(output_lock(path), str(path), "wait for that export or choose another --out"):
        _remove_staging_leftovers(path)
        calibration, pixels, labels = _read_images(config, fmt, img_size, opts)
        job = ExportJob(
            model,
            _metadata(config, fmt, img_size, run_dir),
            fmt,
            img_size,
            calibration,
            opts,
            None if pixels is None else (pixels, labels),
        )
        need = _room_needed(model, fmt)
        check_room(path, need)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.staging-", dir=path.parent) as staging:
            try:
                sidecar = _stage(job, Path(staging) / path.name, model, pixels, labels)
            except Exception as e:  # judged before the staging folder is removed, while the disk is still full
                raise (as_disk_full(e, path, need) or e) from None
            _publish(Path(staging) / path.name, path)
    return ExportResult(
        path, sidecar_path(path), sidecar["parity"], time.perf_counter() - t0, sidecar["speed"], sidecar.get("qat")
    )


def _check_format_flags(opts: ExportOptions, fmt: Format) -> None:
    """Refuse a flag that the format does not have, in one line, before any work."""
    if opts.full_integer and not (fmt.record.full_integer and fmt.precision == "int8"):
        why = (
            "a float graph has nothing to quantise"
            if fmt.precision != "int8"
            else f"its int8 {fmt.record.title} graph is integer throughout already"
        )
        which = " or ".join(b.name for b in RECORDS if b.full_integer)
        raise UserError(
            f"--full-integer applies to --format {which} --int8, not {fmt.name} ({why}); "
            f"drop it or export {which} with --int8"
        )
    if opts.batch is not None and not fmt.record.batch_option:
        which = " or ".join(b.name for b in RECORDS if b.batch_option)
        raise UserError(
            f"--batch applies to --format {which}, not {fmt.name} (its files take one image at a time); drop it"
        )


def _stage(job: ExportJob, staged: Path, model, pixels, labels) -> dict[str, Any]:
    """The model file and its sidecar in the staging folder, checked for parity and timed."""
    fmt = job.fmt
    if fmt.precision == "int8" and fmt.runs_here:  # timed against the float file (speed.py)
        job.float_copy = staged.with_name(f"float{fmt.extension}")
    sidecar = _sidecar(job, get_exporter(fmt.backend).write(job, staged), staged, model)
    sidecar["parity"] = _parity(job, staged, sidecar, pixels, labels)
    sidecar["speed"] = speed_check(fmt, staged, job.float_copy, job.calibration, sidecar)
    sidecar["file"] = file_record(staged)
    write_json(sidecar_path(staged), sidecar)
    return sidecar


def _room_needed(model, fmt: Format) -> int:
    """Roughly the bytes an export writes beside its target: the file, and for int8 the float file
    it is quantised from and timed against (float32 weights, plus a margin for graph and metadata)."""
    weights = 4 * count_params(model)
    return (2 if fmt.precision == "int8" else 1) * weights + (4 << 20)


def _img_size(model, config: dict[str, Any], asked: int | None) -> int:
    img_size = asked or int(config["img_size"])
    multiple = getattr(model, "input_multiple", 1)
    if img_size < multiple or img_size % multiple:
        raise UserError(f"--img-size {img_size} does not fit {config['model']}: use a multiple of {multiple}")
    return img_size


def _target(run_dir, fmt: Format, out) -> Path:
    """The output path, checked before any work: right extension, writable, and not a file of someone else's."""
    path = Path(out) if out is not None else default_export_path(run_dir, fmt)
    if path.suffix != fmt.extension:
        raise UserError(f"--out {path} should end in {fmt.extension} for --format {fmt.name}")
    check_output_file(out if out is not None else path, "--out", directory_ok=fmt.record.directory)
    if path.is_dir() and not fmt.record.directory:
        raise UserError(f"--out {path} is a directory; give a file path")
    for existing in (path, sidecar_path(path)):
        if existing.exists() and not _ours(path):
            raise UserError(
                f"--out {path}: {existing} exists and was not written by skipnet-export (no valid "
                f"{sidecar_path(path).name} beside it); move it away or choose another --out"
            )
    return path


def _ours(path: Path) -> bool:
    """An earlier export of ours: its sidecar parses (a mismatching pair is ours too, and replaced)."""
    try:
        parse(Sidecar, read_json(sidecar_path(path)), "", "")
        return True
    except UserError:
        return False


def _remove_staging_leftovers(path: Path) -> None:
    """What a killed export of this target left (we hold its lock, so no live export owns it): staging
    folders, and a package set aside by _publish, put back if the new one never arrived."""
    for old in path.parent.glob(f".{path.name}.staging-*"):
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    aside = path.with_name(f".{path.name}.old")
    if aside.is_dir() and not path.exists():
        os.replace(aside, path)
    elif aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)


def _read_images(config: dict[str, Any], fmt: Format, img_size: int, opts: ExportOptions):
    """Calibration and parity images, read before anything is written: missing data fails first."""
    pre = _preprocess_at(config["preprocess"], img_size)
    parity = opts.verify and fmt.runs_here
    if not (fmt.needs_calibration or parity):
        return None, None, None
    train, val, _ = build_datasets(
        config["dataset"], opts.data_dir or config.get("train", {}).get("data_dir"), img_size, augment=False
    )
    calibration = sample_pixels(train.source, pre, opts.calibration_samples)[0] if fmt.needs_calibration else None
    pixels, labels = sample_pixels(val.source, pre, opts.verify_samples) if parity else (None, None)
    return calibration, pixels, labels


def _preprocess_at(pre: dict[str, Any], img_size: int) -> dict[str, Any]:
    """The run's preprocessing at another input size (same resize-to-crop ratio)."""
    if img_size == pre["crop"]:
        return pre
    return dict(pre, img_size=img_size, crop=img_size, resize=round(img_size * pre["resize"] / pre["crop"]))


def _metadata(config: dict[str, Any], fmt: Format, img_size: int, run_dir) -> dict[str, Any]:
    """What the exported file carries about itself (ONNX metadata_props, CoreML user metadata, TFLite
    metadata). model_version names the trained weights, so two exports of one run share it."""
    weights = file_record(Path(run_dir) / WEIGHTS_FILE)["sha256"]
    return dict(
        config,
        img_size=img_size,
        preprocess=_preprocess_at(config["preprocess"], img_size),
        format=fmt.backend,
        precision=fmt.precision,
        exporter_version=__version__,
        model_version=f"weights sha256 {weights[:12]}",
    )


def _sidecar(job: ExportJob, spec: dict[str, Any], staged: Path, model) -> dict[str, Any]:
    spec = dict(spec)
    macs_litert = spec.pop("macs_litert", None)
    sidecar = dict(job.config, **spec)
    sidecar["complexity"] = {"params": count_params(model), "macs": count_macs(model, job.img_size)}
    if macs_litert:  # the converter's own count, a check on ours
        sidecar["complexity"]["macs_litert"] = int(macs_litert)
    if job.calibration is not None:
        sidecar["calibration"] = {
            "images": int(len(job.calibration)),
            "split": "train",
            "dataset": job.config["dataset"],
        }
    return sidecar


def _parity(job: ExportJob, staged: Path, sidecar: dict[str, Any], pixels, labels) -> dict[str, Any] | None:
    """The staged file in its real runtime against PyTorch on real validation images (an exporter with
    checks of its own, for a file that may not run here, does them in its ``parity``)."""
    from .parity import parity_report, qat_verdict

    exporter = get_exporter(job.fmt.backend)
    if hasattr(exporter, "parity"):
        return exporter.parity(job, staged, sidecar, pixels, labels)
    if pixels is None:
        return None
    from ..runtime import load

    predictor = load(staged, config=sidecar)
    report = parity_report(job.pixel_model("nhwc"), predictor.backend, pixels, labels, job.fmt.precision)
    return qat_verdict(report, sidecar["qat"], job.fmt.record.qat_exact) if "qat" in sidecar else report


def _publish(staged: Path, path: Path) -> None:
    """Model first, sidecar last; a package directory (CoreML) is swapped via a name beside it."""
    crash_point("export:staged")
    old = path.with_name(f".{path.name}.old")
    if staged.is_dir() and path.exists():
        os.replace(path, old)
    os.replace(staged, path)
    crash_point("export:model-moved")
    os.replace(sidecar_path(staged), sidecar_path(path))
    crash_point("export:sidecar-moved")
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["ExportJob", "ExportOptions", "ExportResult", "export", "get_exporter"]
