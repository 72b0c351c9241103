"""Typed schemas of the files one stage hands the next: a run's config.json, an export's sidecar,
trainer_state.pt and the pipeline's settings. Reading goes through ``parse``, which checks types
and ranges and turns the first problem into one line naming the file and the field.

Files we wrote may hold keys added by later versions (``extra="allow"``); settings a user writes
(the pipeline's YAML sections) may not (``extra="forbid"``), so that a typo is an error.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import UserError
from .formats import BACKENDS, EXPORT_FORMATS

Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
RGB = Annotated[list[Finite], Field(min_length=3, max_length=3)]


class _Written(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class _Settings(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


# How the "preprocess" section's resize is done (skipnet.data.transforms builds it; the timm
# data config of a run, skipnet.models.hub, names it): the shorter side to ``resize`` with this
# interpolation, antialiased, then a centre crop of ``crop``.
RESIZE_INTERPOLATION = "bilinear"


class Preprocess(_Written):
    img_size: Positive
    resize: Positive
    crop: Positive
    grayscale_to_rgb: bool
    mean: RGB
    std: Annotated[list[Annotated[float, Field(gt=0, allow_inf_nan=False)]], Field(min_length=3, max_length=3)]


# A run's loss (skipnet-train --loss), and what reports call it.
LOSS_NAMES = {"bias": "Bias Loss", "ce": "cross-entropy"}


class Loss(_Written):
    name: Literal["bias", "ce"]
    alpha: Finite = 0.3
    beta: Finite = 0.3
    normalization: Literal["global", "local"] = "global"
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0


class RunConfig(_Written):
    """config.json of a run directory: what rebuilds and feeds the model."""

    model: Annotated[str, Field(min_length=1)]
    num_classes: Annotated[int, Field(ge=2)]
    class_names: list[str]
    img_size: Positive
    mean: RGB
    std: RGB
    preprocess: Preprocess
    dataset: str
    loss: Loss | None = None
    train: dict[str, Any] = {}
    metrics: dict[str, Finite] = {}

    @model_validator(mode="after")
    def _labels_fit(self) -> RunConfig:
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names for num_classes {self.num_classes}")
        return self


class Quantization(_Written):
    dtype: str
    scale: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    zero_point: int


class TensorSpec(_Written):
    name: str
    dtype: str
    layout: str | None = None
    shape: list[int] | None = None
    quantization: Quantization | None = None


class FileRecord(_Written):
    """The exported model file a sidecar describes: a loader refuses a sidecar whose record does not match."""

    name: str
    bytes: NonNegative
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Sidecar(RunConfig):
    """NAME.EXT.json beside an exported model: the run's config plus how to feed the file."""

    format: Literal[tuple(BACKENDS)]  # type: ignore[valid-type]
    precision: Literal["float32", "int8"]
    input: TensorSpec
    output: dict[str, Any]
    file: FileRecord
    parity: dict[str, Any] | None = None
    speed: dict[str, Any] | None = None  # int8 files: timed against float on the exporting host
    mobile: dict[str, Any] | None = None  # .onnx files: onnxruntime's mobile checker, per execution provider


class TrainerState(BaseModel):
    """trainer_state.pt (loaded with torch.load(weights_only=True)): what continues a run."""

    model_config = ConfigDict(strict=True, extra="allow", arbitrary_types_allowed=True)

    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    epoch: NonNegative
    batch: NonNegative
    global_step: NonNegative
    history: list[dict[str, Any]]
    config: dict[str, Any]
    rng: dict[str, Any]

    @field_validator("model")
    @classmethod
    def _tensors(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v or not all(hasattr(t, "shape") and hasattr(t, "dtype") for t in v.values()):
            raise ValueError("must map parameter names to tensors")
        return v


# QAT's default Adam learning rate: small, because the fine-tuned model is already trained and
# distillation keeps it near its float self (benchmarks/results/issue15/NOTES.md).
QAT_LR = 3e-5

# An exported file's batch size (skipnet-export --batch): a fixed one, which phones' execution providers
# need, or any (DYNAMIC_BATCH). MAX_BATCH bounds a fixed one because the export traces, calibrates and
# checks the file in batches of that size; a server that wants large batches takes DYNAMIC_BATCH.
DYNAMIC_BATCH = "dynamic"
MAX_BATCH = 256


def batch_size(value: Any) -> int | str:
    """A batch setting as an int 1..MAX_BATCH or DYNAMIC_BATCH (a flag's digits are read as a number);
    ValueError for anything else."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 10:
        value = int(value)
    if value == DYNAMIC_BATCH or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_BATCH):
        return value
    raise ValueError(
        f"must be a batch size 1..{MAX_BATCH} (fixed, as phones' execution providers need) or "
        f"{DYNAMIC_BATCH!r} (any batch, for servers)"
    )


class ExportSettings(_Settings):
    formats: Annotated[list[Literal[tuple(EXPORT_FORMATS)]], Field(min_length=1)]  # type: ignore[valid-type]
    verify_samples: Positive = 1000
    calibration_samples: Positive = 256
    qat_epochs: Positive = 1
    qat_limit: Positive | None = None
    qat_lr: Annotated[float, Field(gt=0, le=1)] = QAT_LR
    full_integer: bool = False  # int8 TFLite: every op int8 (skipnet-export --full-integer)
    batch: Annotated[int | str, BeforeValidator(batch_size)] = 1  # ONNX files (skipnet-export --batch)


class GateSettings(_Settings):
    max_drop: Annotated[float, Field(ge=0, le=100)] | None = Field(
        1.0, description="the allowed drop in points, 0..100 (e.g. 0.5)"
    )
    min_top1: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="top-1 is a fraction: use 0..1, e.g. 0.85"
    )
    limit: Positive | None = None


class BenchSettings(_Settings):
    threads: Positive = 1
    runs: Positive = 200
    warmup: NonNegative = 10


class PipelineConfig(_Settings):
    """skipnet-pipeline's settings (pipeline.json; --config YAML after its keys are normalised)."""

    out: Annotated[str, Field(min_length=1)]
    data: str
    data_dir: str | None = None
    models: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    baseline: str | None = None
    train: dict[str, Any] = {}
    export: ExportSettings
    gate: GateSettings
    bench: BenchSettings


S = TypeVar("S", bound=BaseModel)


def parse(schema: type[S], data: Any, where: str, fix: str, dashes: bool = False) -> S:
    """``data`` checked against ``schema``; the first problem is a UserError naming ``where`` and the
    field (spelt with dashes, as in YAML and flags, when ``dashes``)."""
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{where}: {describe(e, schema, dashes)}; {fix}") from None


def describe(e: ValidationError, schema: type[BaseModel] | None = None, dashes: bool = False) -> str:
    """The first error in words: ``field num_classes: Input should be ... (got 'ten')``, plus the
    field's description, which says what a right value looks like."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, dict) or err["type"] == "missing" else f" (got {_short(got)})"
    hint = _description(schema, err["loc"]) if schema is not None else None
    name = loc.replace("_", "-") if dashes else loc
    return f"{'field ' + name + ': ' if loc else ''}{msg}{shown}{': ' + hint if hint else ''}"


def _description(schema: type[BaseModel], loc: tuple) -> str | None:
    field = None
    for part in loc:
        fields = getattr(schema, "model_fields", None)
        if not isinstance(part, str) or not fields or part not in fields:
            return None
        field = fields[part]
        nested = [
            t
            for t in (field.annotation, *getattr(field.annotation, "__args__", ()))
            if isinstance(t, type) and issubclass(t, BaseModel)
        ]
        schema = nested[0] if nested else None
    return field.description if field is not None else None


def _short(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
