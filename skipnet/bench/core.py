"""Host benchmark: parameters, MACs, file size and latency per model and format, interleaved."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..common import UserError, atomic_write_text, path_size
from ..common.contract import FORMATS as CONTRACT_FORMATS
from ..common.contract import check_output_file, export_name
from ..common.contract.backends import BACKEND_RECORDS
from ..data import build_datasets, dataset_spec, preprocess_config, sample_pixels
from ..models import PixelModel, count_macs, count_params, create_model, list_models
from ..runtime.timing import cpu_name, file_runner, interleaved_times, latency_stats, paired_ratio

# The contract's formats that need no training run, timed as they are; a backend with timing variants
# (CoreML: per compute unit) is timed as its float format once per variant, named by the variant.
VARIANTS = {
    name: (b.name, label, options) for b in BACKEND_RECORDS.values() for name, (label, options) in b.variants.items()
}
FORMATS = tuple(
    [f for f, spec in CONTRACT_FORMATS.items() if spec.int8 != "qat" and not (spec.exported and spec.record.variants)]
    + list(VARIANTS)
)
ALIASES = {b.name: tuple(b.variants) for b in BACKEND_RECORDS.values() if b.variants}
IMAGENET_MEAN, IMAGENET_STD = dataset_spec("imagefolder").mean, dataset_spec("imagefolder").std  # ImageNet's


def calibration_pixels(n: int, size: int, data_dir: str | None = None) -> np.ndarray:
    """``n`` real Fashion-MNIST training images, evenly spread, as raw uint8 NHWC pixels at ``size``."""
    train, _, info = build_datasets("fashion-mnist", data_dir, size, augment=False)
    return sample_pixels(train.source, preprocess_config(info, size), n)[0]


def estimate_bn_statistics(pixel_model: PixelModel, pixels: np.ndarray, batch: int = 8) -> None:
    """BatchNorm running statistics from real images (cumulative average), then eval mode: fresh
    statistics leave activations so small that some int8 scales fall outside XNNPACK's limits."""
    for m in pixel_model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    pixel_model.train()
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            pixel_model(torch.from_numpy(pixels[i : i + batch]).float())
    pixel_model.eval()


def _config(name: str, size: int, precision: str) -> dict[str, Any]:
    pre = {
        "img_size": size,
        "resize": size,
        "crop": size,
        "grayscale_to_rgb": True,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }
    return {
        "model": name,
        "num_classes": 1000,
        "class_names": [str(i) for i in range(1000)],
        "img_size": size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "preprocess": pre,
        "precision": precision,
        "dataset": "benchmark",
        "model_version": "random weights (latency only)",
    }


def _table_format(fmt: str):
    return CONTRACT_FORMATS[VARIANTS[fmt][0] if fmt in VARIANTS else fmt]


ARM_NOT_TIMED = (
    "not timed: arm64 runs under emulation here, which says nothing about a phone's speed "
    "(skipnet-bench --android times a phone)"
)


def _export(fmt: str, model: torch.nn.Module, name: str, size: int, calib: np.ndarray, work: Path) -> dict[str, Any]:
    """Write ``fmt``'s file once (timed at every thread count) with the export stage's own exporter:
    path, config, runtime name and, for TFLite, LiteRT's own MAC estimate."""
    spec = _table_format(fmt)
    config = _config(name, size, spec.precision)
    if not spec.exported:
        return {"path": None, "config": config, "runtime": f"PyTorch {torch.__version__} eager"}
    path = work / export_name(name, spec)
    built = {"path": path, "config": config, "runtime": _runtime_name(fmt)}
    if not path.exists():  # a backend's variants time the same file
        written = export_file(model, name, fmt, size, calib, path)
        built["config"] = dict(config, input=written["input"], output=written["output"])
        built["macs_litert"] = written.get("macs_litert")
    return built


def export_file(
    model: torch.nn.Module, name: str, fmt: str, size: int, calib: np.ndarray, path: Path, options=None
) -> dict[str, Any]:
    """Write ``model`` (``name``, built by ``built_model``) as ``fmt``'s file at ``path`` with the export
    stage's own exporter and ``options`` (an ExportOptions; default: the CLI's); returns the exporter's
    record of the file (its input, output and, for TFLite, LiteRT's MAC estimate)."""
    from ..export import ExportJob, ExportOptions, get_exporter

    spec = _table_format(fmt)
    calibration = calib if spec.needs_calibration else None
    job = ExportJob(model, _config(name, size, spec.precision), spec, size, calibration, options or ExportOptions())
    return get_exporter(spec.backend).write(job, path)


def _runtime_name(fmt: str) -> str:
    dist, label = _table_format(fmt).record.runtime_label
    variant = f" ({VARIANTS[fmt][1]})" if fmt in VARIANTS else ""
    return label.format(version=_version(dist)) + variant


def _runner(fmt: str, built: dict[str, Any], pm: PixelModel, threads: int):
    """A callable timing one prediction on uint8 NHWC pixels with ``threads`` threads."""
    if not _table_format(fmt).exported:

        def run(x, model=pm):
            torch.set_num_threads(threads)  # global in PyTorch: set per call, rounds mix thread counts
            with torch.inference_mode():
                return model(torch.from_numpy(x))

        return run
    options = VARIANTS[fmt][2] if fmt in VARIANTS else {}
    return file_runner(built["path"], threads, built["config"], **options).logits


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def expand_formats(formats: list[str]) -> list[str]:
    return [f for fmt in formats for f in ALIASES.get(fmt, (fmt,))]


def _check(
    models: list[str], formats: list[str], img_size: int, threads: tuple[int, ...], runs: int, warmup: int
) -> None:
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}; choose from: {', '.join(list_models())}")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise UserError(f"unknown format(s) {', '.join(bad)}; choose from: {', '.join([*FORMATS, *ALIASES])}")
    for f in formats:
        if _table_format(f).exported:  # exported and timed here: before minutes of export
            record = _table_format(f).record
            record.require(f"--formats {f}")
            if record.one_thread_count and len(set(threads)) > 1:
                raise UserError(
                    f"--formats {f}: {record.title} runs one thread count per process; time each --threads "
                    "value in its own skipnet-bench call"
                )
    if formats and not any(_table_format(f).runs_here for f in formats):
        where = sorted(
            {f"{_table_format(f).record.title} models run only on {_table_format(f).record.where}" for f in formats}
        )
        here = [f for f in FORMATS if _table_format(f).exported and _table_format(f).runs_here]
        raise UserError(f"{'; '.join(where)}: on this machine benchmark --formats {','.join(here)} instead")
    if runs < 1 or warmup < 0 or not threads or min(threads) < 1 or img_size < 32 or img_size % 32:
        raise UserError("--runs and --threads must be positive, --warmup >= 0, --img-size a multiple of 32")


def pixel_interpreter(
    path: str | os.PathLike, pixels: np.ndarray, threads: int = 1, latest_features: bool = False
) -> tuple[Any, int]:
    """A LiteRT interpreter of a .tflite graph variant (no SkipNet metadata needed) with raw 0..255
    ``pixels`` set as its input, quantised as the input tensor wants, and its XNNPACK partitions
    (latest_features: as load_interpreter)."""
    from ..runtime.backends import load_interpreter, to_input
    from ..runtime.delegation import delegation, nodes

    it, log = load_interpreter(Path(path), threads, latest_features)
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], to_input(pixels, inp))
    return it, delegation(log, nodes(it))["partitions"]


def study_out(out: str | os.PathLike) -> Path:
    """A benchmark script's ``--out`` (it writes OUT.md and OUT.json), checked before any work so
    that a bad path fails in a second, not after the measurement."""
    for suffix in (".md", ".json"):
        check_output_file(Path(out).with_suffix(suffix), "--out")
    return Path(out)


def write_study(out: str | os.PathLike, markdown: str, record: dict[str, Any]) -> None:
    """A benchmark script's results: ``out``.md (its tables) and ``out``.json (their data) beside
    it, each written whole or not at all, after printing the tables."""
    print(markdown)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".md"), markdown)
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=2) + "\n")


def time_files(
    paths: dict[str, str | os.PathLike],
    pixels: np.ndarray,
    threads: int = 1,
    runs: int = 100,
    warmup: int = 5,
    keep_times: bool = False,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Latency of exported model files (any format ``skipnet.load`` takes) on one batch of raw
    uint8 NHWC ``pixels``, interleaved like ``benchmark``; ``keep_times`` adds the per-round times
    (for ratios paired by round, ``paired_ratio``)."""
    if runs < 1 or warmup < 0 or threads < 1:
        raise UserError("runs and threads must be positive and warmup >= 0")
    predictors = {k: file_runner(p, threads) for k, p in paths.items()}
    times = interleaved_times({k: pr.logits for k, pr in predictors.items()}, pixels, runs, warmup, progress)
    out = {}
    for k, pr in predictors.items():
        out[k] = {
            "format": pr.format,
            "precision": pr.precision,
            "threads": threads,
            "size_mb": round(path_size(paths[k]) / 1e6, 3),
            **latency_stats(times[k]),
        }
        if keep_times:
            out[k]["times_ms"] = [round(v, 4) for v in times[k]]
    return out


def benchmark(
    models: list[str],
    formats: list[str],
    img_size: int = 224,
    threads: int | Sequence[int] = 1,
    runs: int = 50,
    warmup: int = 5,
    calibration: int = 64,
    data_dir: str | None = None,
    reference: str = "mobilenet_v3_large",
    progress: bool = True,
    android: dict[str, Any] | None = None,
    keep_times: bool = False,
    platform: str | None = None,
) -> list[dict[str, Any]]:
    """One row per (model, format, thread count). Each file is exported once; latencies come from
    ``runs`` rounds that time every model, format and thread count once each, in turn (after
    SETTLE_CALLS untimed calls), so drift in the machine's speed hits all of them alike.

    ``keep_times`` adds each row's per-round times ("times_ms") for ratios paired by round.
    ``android`` ({"benchmark_binary": PATH, "serial": S, "delegate": None|"gpu"|"nnapi"}) times
    the .tflite files on the attached phone with benchmark_model instead (bench/android.py).
    ``platform="arm64"`` times nothing: each .tflite file's delegation (XNNPACK partitions, ops
    left to the builtin kernels) in LiteRT's aarch64 build under emulation, beside the host's.
    """
    formats = expand_formats(formats)
    threads = (threads,) if isinstance(threads, int) else tuple(dict.fromkeys(threads))
    _check(models, formats, img_size, threads, runs, warmup)
    if android is not None:
        _check_android(android, formats)
    if platform == "arm64":
        _check_arm64(formats, android)
    for f in formats:
        if _table_format(f).exported:
            _table_format(f).record.size_thread_pool(threads[0])  # before its exporter lowers anything in this process
    calib = calibration_pixels(calibration, img_size, data_dir)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        here = android is None and platform != "arm64"
        timed = _export_all(models, formats, img_size, threads, calib, Path(tmp), rows, progress, here)
        if android is not None:
            _time_on_android(timed, threads, runs, warmup, android)
            return rows
        if platform == "arm64":
            _census_on_arm64(timed)
            return rows
        times = interleaved_times({k: v[0] for k, v in timed.items()}, calib[:1], runs, warmup, progress)
    for (name, fmt, t), (_, row, _) in timed.items():
        ts = times[(name, fmt, t)]
        row.update(latency_stats(ts))
        if keep_times:
            row["times_ms"] = [round(v, 4) for v in ts]
        ref = times.get((reference, fmt, t))
        if ref:
            row[f"latency_vs_{reference}"] = round(paired_ratio(ts, ref), 3)
    return rows


def _check_android(android: dict[str, Any], formats: list[str]) -> None:
    from .android import Adb, check_binary

    _only(formats, formats_for(android=True), "--android times")
    check_binary(android["benchmark_binary"])
    Adb(android.get("serial")).require_device()  # fail before minutes of export


def formats_for(android: bool = False, platform: str | None = None) -> list[str]:
    """The formats whose backend a phone (``android``) or another ``platform`` runs."""
    return [
        f
        for f in FORMATS
        if _table_format(f).exported
        and (not android or _table_format(f).record.android)
        and (platform is None or platform in _table_format(f).record.platforms)
    ]


def _only(formats: list[str], able: list[str], what: str) -> None:
    """Refuse formats not in ``able``, naming those that are."""
    if any(f not in able for f in formats):
        kinds = sorted({_table_format(f).extension for f in able})
        raise UserError(f"{what} {', '.join(kinds)} files: use --formats {','.join(able)}")


def _check_arm64(formats: list[str], android: dict[str, Any] | None) -> None:
    from ..runtime import arm64

    if android is not None:
        raise UserError("--platform arm64 and --android are two different machines: choose one")
    _only(formats, formats_for(platform="arm64"), "--platform arm64 runs")
    arm64.platform()  # set up (or refused) before minutes of export


def _census_on_arm64(timed: dict[tuple, tuple]) -> None:
    """Each file's delegation on arm64 and on this host, into its rows; no timing (ARM_NOT_TIMED)."""
    from ..runtime.arm64 import NAME
    from ..runtime.backends import census

    for (_, _, t), (_, row, path) in timed.items():
        row.update(
            platform=NAME,
            delegation=census(path, "arm64", t),
            host_delegation=census(path, "host", t),
            skipped=ARM_NOT_TIMED,
        )


def built_model(name: str, calib: np.ndarray) -> tuple[torch.nn.Module, PixelModel]:
    """``name`` freshly initialised (seed 0, 1000 classes) with BatchNorm statistics from ``calib``."""
    torch.manual_seed(0)
    model = create_model(name, 1000).eval()
    pm = PixelModel(model, IMAGENET_MEAN, IMAGENET_STD, "nhwc")
    estimate_bn_statistics(pm, calib)
    return model, pm


def model_files(name: str, formats: list[str], img_size: int, calib: np.ndarray, work: Path) -> dict[str, Path]:
    """The files ``benchmark`` times for ``name`` (formats: "tflite", "tflite-int8", "onnx", "onnx-int8"),
    written under ``work`` by the export stage's exporters: for per-op profiles of the same files."""
    model, _ = built_model(name, calib)
    return {fmt: _export(fmt, model, name, img_size, calib, work)["path"] for fmt in formats}


def _export_all(
    models: list[str],
    formats: list[str],
    img_size: int,
    threads: tuple[int, ...],
    calib: np.ndarray,
    work: Path,
    rows: list[dict[str, Any]],
    progress: bool,
    here: bool,
) -> dict[tuple, tuple]:
    """Build and export every model in every format, appending one row per thread count to ``rows``;
    returns (model, format, threads) -> (runner on this host or None, its row, the file)."""
    timed = {}
    host = {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0))}
    for name in tqdm(models, desc="export", disable=not progress):
        model, pm = built_model(name, calib)
        params, macs = count_params(model), count_macs(model, img_size)
        for fmt in formats:
            base = {"model": name, "format": fmt, "params": params, "macs": macs, "img_size": img_size, **host}
            spec = _table_format(fmt)
            if not spec.runs_here:
                why = f"{spec.record.title} runs only on {spec.record.where}: not timed on this host"
                rows.extend({**base, "threads": t, "skipped": why} for t in threads)
                continue
            built = _export(fmt, model, name, img_size, calib, work)
            size = (
                path_size(built["path"])
                if built["path"]
                else sum(p.numel() * p.element_size() for p in model.state_dict().values())
            )
            base.update(runtime=built["runtime"], size_mb=round(size / 1e6, 2))
            if built.get("macs_litert") is not None:  # LiteRT's own count: the check on `macs`
                base["macs_litert"] = int(built["macs_litert"])
            for t in threads:
                rows.append(row := dict(base, threads=t))
                timed[(name, fmt, t)] = (_runner(fmt, built, pm, t) if here else None, row, built["path"])
    return timed


def _time_on_android(
    timed: dict[tuple, tuple], threads: tuple[int, ...], runs: int, warmup: int, android: dict[str, Any]
) -> None:
    """benchmark_model on the phone, per thread count; its figures go into the rows."""
    from .android import run_on_android

    for t in threads:
        keys = [k for k in timed if k[2] == t]
        device = run_on_android(
            [(f"{k[0]} {k[1]}", timed[k][2]) for k in keys],
            android["benchmark_binary"],
            android.get("serial"),
            t,
            runs,
            warmup,
            android.get("delegate"),
        )
        for k, measured in zip(keys, device):
            timed[k][1].update(
                {k2: v for k2, v in measured.items() if k2 not in ("model", "file")}, cpu=measured["device"], cores=None
            )
