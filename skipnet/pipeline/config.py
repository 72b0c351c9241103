"""The pipeline's settings: built-in demo defaults < --config YAML < flags.

A config file, every key optional:

    out: runs/demo
    data: fashion-mnist            # or imagefolder with data-dir (train/ and val/ class folders)
    models: [skipnet_s, mobilenet_v3_large]   # the first is the model to ship, the rest baselines
    train: {recipe: fast, loss: bias, limit-train: 30000}   # skipnet-train keys, the same for every model
    baseline: mobilenet_v3_large   # latency ratios against it (default: the second model)
    export: {formats: [tflite-int8, onnx, coreml], verify-samples: 1000}   # *-int8-qat: qat-epochs, qat-limit, qat-lr
                                   # full-integer: true: int8 TFLite with every op int8 (NPU delegates)
                                   # batch: 1 (default) or dynamic: the .onnx files' batch size
    gate: {max-drop: 1.0, min-top1: null, limit: null}     # int8 vs float, skipnet-eval's gates
    bench: {threads: 1, runs: 200, warmup: 10}
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ..common import UserError, read_yaml_mapping
from ..common.contract import FORMATS, QAT_LR, PipelineConfig, export_name, parse

# Settings of every pipeline; the training recipe defaults to the dataset's (skipnet-train's).
DEFAULTS: dict[str, Any] = {
    "out": "runs/demo",
    "data": "fashion-mnist",
    "data_dir": None,
    "models": ["skipnet_s", "mobilenet_v3_large"],
    "baseline": None,
    "train": {"recipe": None, "loss": "bias"},
    "export": {
        "formats": ["tflite-int8", "onnx", "coreml"],
        "verify_samples": 1000,
        "calibration_samples": 256,
        "qat_epochs": 1,
        "qat_limit": None,
        "qat_lr": QAT_LR,
        "full_integer": False,
        "batch": 1,
    },
    "gate": {"max_drop": 1.0, "min_top1": None, "limit": None},
    "bench": {"threads": 1, "runs": 200, "warmup": 10},
}
# `make demo` (no --config): the fast Fashion-MNIST recipe on half the training images, so the whole
# chain for two models (train, export, gate, benchmark, report) fits in ~15 minutes on 2 CPU cores.
DEMO = {"train": {"limit_train": 30000}}
# `make demo FULL=1` / --full: the full recipe on every training image.
FULL = {"out": "runs/demo-full", "train": {"recipe": "full"}}
SECTIONS = ("train", "export", "gate", "bench")


def _norm(mapping: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise UserError(f"{where} must be a mapping of keys to values, e.g. 'epochs: 5'")
    return {str(k).replace("-", "_"): v for k, v in mapping.items()}


def merge(base: dict[str, Any], override: dict[str, Any], where: str) -> dict[str, Any]:
    """``base`` with ``override``'s keys; sections merge key by key. Unknown keys are user errors
    (train keys are checked later, by the training stage's own configuration)."""
    out = copy.deepcopy(base)
    for key, value in _norm(override, where).items():
        if key not in DEFAULTS:
            raise UserError(f"{where}: unknown key {key!r}; use {', '.join(k.replace('_', '-') for k in DEFAULTS)}")
        if key in SECTIONS:
            section = _norm(value or {}, f"{where}: {key}")
            if key != "train":
                unknown = [k for k in section if k not in DEFAULTS[key]]
                if unknown:
                    raise UserError(
                        f"{where}: unknown key(s) {', '.join(unknown)} in {key}; use "
                        f"{', '.join(k.replace('_', '-') for k in DEFAULTS[key])}"
                    )
            out[key] = {**out[key], **section}
        else:
            out[key] = value
    return out


def load_config(path: str | None = None, full: bool = False, **flags: Any) -> dict[str, Any]:
    """The resolved settings: defaults, then the demo's short budget (without a YAML file) or
    ``--full``, then the YAML file, then non-None flags."""
    cfg = merge(DEFAULTS, FULL, "--full") if full else merge(DEFAULTS, {} if path else DEMO, "the demo")
    if path:
        cfg = merge(cfg, read_yaml_mapping(path), f"config file {path}")
    cfg = merge(cfg, {k: v for k, v in flags.items() if v is not None}, "flags")
    return validate(cfg, f"config file {path}" if path else "settings")


def _listed(value: Any) -> Any:
    """A comma-separated string (a flag) as a list; anything else as it is, for the schema to judge."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def validate(cfg: dict[str, Any], where: str = "settings") -> dict[str, Any]:
    """Types and ranges through the contract's schema, then what only the other stages know (names)."""
    from ..data import dataset_spec, list_datasets
    from ..models import list_models
    from ..training.config import check_settings

    cfg["models"] = _listed(cfg["models"])
    cfg["export"]["formats"] = _listed(cfg["export"]["formats"])
    cfg = parse(
        PipelineConfig, cfg, where, "see examples/pipeline/imagefolder.yaml for the keys and their types", dashes=True
    ).model_dump()
    models = cfg["models"]
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(map(str, unknown))}; choose from: {', '.join(list_models())}")
    if cfg["baseline"] is not None and cfg["baseline"] not in models:
        raise UserError(f"baseline {cfg['baseline']} is not among the models {models}; add it or leave baseline out")
    if len(set(models)) != len(models):
        raise UserError(f"models lists a model twice: {models}")
    if cfg["data"] not in list_datasets():
        raise UserError(f"unknown data {cfg['data']!r}; choose one of: {', '.join(list_datasets())}")
    if dataset_spec(cfg["data"]).needs_data_dir and not cfg["data_dir"]:
        raise UserError(
            f"data {cfg['data']} needs data-dir: a folder holding {dataset_spec(cfg['data']).data_dir_holds}"
        )
    for key in ("model", "data", "data_dir", "out"):
        if key in cfg["train"]:
            raise UserError(
                f"train: {key.replace('_', '-')} is set for the whole pipeline; "
                f"put it at the top level ({'models' if key == 'model' else key.replace('_', '-')}:)"
            )
    cfg["train"] = check_settings(cfg["train"], where=f"{where}: train")  # skipnet-train's own checks
    formats = [FORMATS[f] for f in cfg["export"]["formats"]]
    for f in formats:  # before minutes of training
        f.record.require(f"export format {f.name}")
    if not any(f.runs_here for f in formats):
        titles = sorted({f"{f.record.title} models run only on {f.record.where}" for f in formats})
        runnable = [f.name for f in FORMATS.values() if f.exported and f.runs_here and f.int8 == "ptq"]
        raise UserError(
            f"{'; '.join(titles)}, so the accuracy gate and the benchmark need another export format here: "
            f"add one of {', '.join(runnable)} to export formats"
        )
    cfg["out"] = str(Path(cfg["out"]))
    return cfg


def with_new_keys(saved: dict[str, Any]) -> dict[str, Any]:
    """Settings a pipeline directory saved, with the export keys added since at their defaults (what
    that run did without them), so a run started by an older version still resumes."""
    if isinstance(saved.get("export"), dict):
        saved = {**saved, "export": {**DEFAULTS["export"], **saved["export"]}}
    return saved


def export_path(out: Path, model: str, fmt: str) -> Path:
    """Where the pipeline keeps ``model``'s export in format ``fmt``: OUT/exports/MODEL[_int8][_qat].EXT."""
    return Path(out) / "exports" / export_name(model, FORMATS[fmt])


def gated_format(formats: list[str]) -> str:
    """The file the accuracy gate checks: the first int8 export that runs here (int8 TFLite in the demo),
    else the first that runs here, else the first."""
    runnable = [f for f in formats if FORMATS[f].runs_here]
    return next((f for f in runnable if FORMATS[f].needs_calibration), next(iter(runnable), formats[0]))
