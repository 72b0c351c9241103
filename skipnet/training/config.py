"""Training configuration: defaults < dataset recipe < --config YAML < command-line flags.

`TrainConfig` is the one definition of every training setting: each field carries its type,
default, help text and allowed range. skipnet-train's flags are generated from the fields
(cli.py), YAML keys are checked against them, and a bad value is one UserError that names
the flag (or the config file and key) and says what would be accepted.
"""

import os
from collections.abc import Mapping
from functools import cache
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from ..common import UserError, read_yaml_mapping
from ..common.contract import LOSS_NAMES
from ..data import dataset_spec, list_datasets
from .bias_loss import NORMALIZATIONS

LOSSES = tuple(LOSS_NAMES)  # --loss choices
OPTIMIZERS = ("sgd", "adamw", "rmsprop")
SCHEDULERS = ("cosine", "multistep", "constant")
DEVICES = ("auto", "cpu", "cuda")

# Named recipes: the settings a run starts from before --config and flags. Each dataset has a
# default; `--recipe NAME` picks another (e.g. the paper's CIFAR recipe on any dataset).
RECIPES: dict[str, dict[str, Any]] = {
    # Fashion-MNIST on a CPU in minutes: 3 epochs reach ~89.7% top-1 with SkipNet-S (README).
    "fast": dict(
        model="skipnet_s",
        epochs=3,
        batch_size=128,
        optimizer="sgd",
        lr=0.2,
        weight_decay=5e-5,
        scheduler="cosine",
        warmup_epochs=0.3,
        label_smoothing=0.1,
    ),
    # The same schedule run 10x longer: the Fashion-MNIST accuracy table (hours on a CPU).
    "full": dict(
        model="skipnet_s",
        epochs=30,
        batch_size=128,
        optimizer="sgd",
        lr=0.2,
        weight_decay=5e-5,
        scheduler="cosine",
        warmup_epochs=1.0,
        label_smoothing=0.1,
    ),
    # The paper's CIFAR recipe (docs/paper.md, "CIFAR-100 reference results"): SGD 0.1, momentum 0.9, wd 1e-4,
    # batch 128, 160 epochs, lr x0.1 at epochs 80 and 122; random crop 32 with padding 4 + horizontal flip come
    # from the data stage.
    "paper": dict(
        model="skipnet_m",
        epochs=160,
        batch_size=128,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        scheduler="multistep",
        milestones=[80, 122],
        gamma=0.1,
        warmup_epochs=0.0,
        label_smoothing=0.0,
    ),
    # Fine-tuning on a user's own image folders.
    "finetune": dict(
        model="skipnet_m",
        epochs=30,
        batch_size=64,
        optimizer="sgd",
        lr=0.05,
        weight_decay=4e-5,
        scheduler="cosine",
        warmup_epochs=1.0,
        label_smoothing=0.1,
        workers=2,
    ),
}
DEFAULT_RECIPE = {name: dataset_spec(name).recipe for name in list_datasets()}  # the dataset table's


def _comma_separated(value: Any) -> Any:
    # A flag or a YAML scalar such as "80,122"; a YAML list passes through.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


Milestones = Annotated[list[Annotated[int, Field(ge=1)]], BeforeValidator(_comma_separated)]


def _number(default: float, help: str, **limits: float) -> Any:
    """A float setting: finite (NaN and inf are refused) and within ``limits`` (ge/gt/le/lt)."""
    return Field(default, description=help, allow_inf_nan=False, **limits)


def _switch(default: bool, help: str) -> Any:
    # strict: a YAML 1 or "yes" string is a mistake, not True
    return Field(default, description=help, strict=True)


def _text(help: str, example: str, default: str | None = None) -> Any:
    return Field(default, description=help, json_schema_extra={"example": example})


class TrainConfig(BaseModel):
    """Every setting of a training run; the field order is that of config.json's "train" section."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str = _text("model name (skipnet-models lists them); recipe default", "skipnet_s", "skipnet_s")
    data: str = _text(
        f"dataset: {', '.join(list_datasets())} (default fashion-mnist)", "fashion-mnist", "fashion-mnist"
    )
    data_dir: str | None = _text("dataset directory (imagefolder: holds train/ and val/)", "data/mine")
    download: bool = _switch(False, "download CIFAR if missing")
    out: str | None = _text("run directory to write (required)", "runs/s")
    weights: str | None = _text(
        "start from these weights: a run directory, .safetensors, or a state_dict .pth "
        "(e.g. the authors' skipblocknet-m.pth)",
        "runs/s",
    )
    reset_head: bool = _switch(False, "with --weights: re-initialise the final classifier (fine-tune on other classes)")
    # loss
    loss: Literal[LOSSES] = Field("bias", description="bias (Bias Loss, default) or ce (cross-entropy)")
    alpha: float = _number(0.3, "Bias Loss alpha (0.3)", ge=0)
    # z = exp(alpha * v) - beta weights each sample; beta <= 1 keeps every weight >= 0
    beta: float = _number(0.3, "Bias Loss beta (0.3)", ge=0, le=1)
    normalization: Literal[NORMALIZATIONS] = Field("global", description="Bias Loss variance normalisation (global)")
    label_smoothing: float = _number(0.0, "label smoothing of the cross-entropy", ge=0, lt=1)
    # schedule
    epochs: int = Field(10, ge=1, description="epochs to train")
    batch_size: int = Field(128, ge=1, description="global batch size (split across torchrun processes)")
    optimizer: Literal[OPTIMIZERS] = Field("sgd", description="optimizer")
    lr: float = _number(0.1, "peak learning rate", gt=0)
    momentum: float = _number(0.9, "momentum (SGD: Nesterov when > 0; RMSprop)", ge=0, lt=1)
    weight_decay: float = _number(1e-4, "weight decay (not on BN parameters and biases)", ge=0)
    scheduler: Literal[SCHEDULERS] = Field("cosine", description="learning-rate schedule after the warmup")
    milestones: Milestones = Field(
        default_factory=list,
        description="epochs at which multistep decays the lr, e.g. 80,122",
        json_schema_extra={"example": "80,122"},
    )
    gamma: float = _number(0.1, "multistep decay factor", gt=0, le=1)
    warmup_epochs: float = _number(0.0, "epochs of linear lr warmup (may be fractional)", ge=0)
    # data
    img_size: int | None = Field(
        None, ge=1, description="input side (multiple of 32 for SkipNet)", json_schema_extra={"example": 32}
    )
    limit_train: int | None = Field(
        None,
        ge=1,
        description="train on N images only (quick runs)",
        json_schema_extra={"metavar": "N", "example": 4096},
    )
    limit_val: int | None = Field(
        None,
        ge=1,
        description="validate on the first N images only",
        json_schema_extra={"metavar": "N", "example": 1000},
    )
    workers: int = Field(0, ge=0, description="DataLoader worker processes")
    # run
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed")  # numpy's seed range
    deterministic: bool = _switch(False, "deterministic kernels (bit-identical resume on CPU)")
    save_every: int = Field(
        200,
        ge=0,
        description="checkpoint every STEPS steps (0: epoch ends only)",
        json_schema_extra={"metavar": "STEPS"},
    )
    ema: bool = _switch(False, "keep an EMA of the weights; model.safetensors holds it")
    ema_decay: float = _number(0.999, "EMA decay per step", gt=0, lt=1)
    bn_images: int = Field(
        512,
        ge=0,
        description="re-estimate BatchNorm statistics on N training images (eval "
        "preprocessing) before every validation, so the saved weights have them (0: off)",
        json_schema_extra={"metavar": "N", "example": 512},
    )
    amp: bool = _switch(False, "mixed precision (bf16 on CPU, fp16 on GPU)")
    channels_last: bool = _switch(True, "NHWC memory format (default on: ~3x faster on CPU)")  # measured (README)
    device: Literal[DEVICES] = Field("auto", description="where to train (auto: a GPU if there is one)")
    recipe: Literal[tuple(RECIPES)] | None = Field(
        None,
        description="settings to start from: fast (Fashion-MNIST default, minutes), full (10x longer), "
        "paper (the paper's CIFAR recipe, CIFAR default), finetune (imagefolder default)",
        json_schema_extra={"example": "fast"},
    )
    # which settings came from the recipe rather than a flag or --config (resolve_config sets it);
    # only those may the small-data rule change (sizing.py)
    _from_recipe: frozenset[str] = PrivateAttr(default_factory=frozenset)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise UserError(_explain(e.errors()[0], values)) from None

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.scheduler == "multistep" and not self.milestones:
            raise UserError("--scheduler multistep needs --milestones, e.g. --milestones 80,122")
        if self.data in list_datasets() and dataset_spec(self.data).needs_data_dir and not self.data_dir:
            raise UserError(f"--data {self.data} needs --data-dir DIR holding {dataset_spec(self.data).data_dir_holds}")
        return self

    def validate(self) -> "TrainConfig":
        """The checks that need the model and dataset registries, and --out (required to train)."""
        from ..models import list_models

        for flag, value, options in [("--model", self.model, list_models()), ("--data", self.data, list_datasets())]:
            if value not in options:
                raise UserError(f"unknown {flag} {value!r}; choose one of: {', '.join(options)}")
        if not self.out:
            raise UserError("--out DIR is required: the run directory to write")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @property
    def from_recipe(self) -> frozenset[str]:
        return self._from_recipe


FIELDS = set(TrainConfig.model_fields)


# ---- what a field accepts, in words (error messages, --help) -------------------------------------


def setting_type(name: str) -> tuple[type, tuple[str, ...] | None]:
    """(int, float, bool, str or list; the allowed values of a Literal field, else None)."""
    kind = TrainConfig.model_fields[name].annotation
    if get_origin(kind) in (Union, UnionType):  # X | None
        kind = next(a for a in get_args(kind) if a is not type(None))
    if get_origin(kind) is Literal:
        return str, get_args(kind)
    return (get_origin(kind) or kind), None


def setting_range(name: str) -> str:
    """The allowed range of a numeric setting, e.g. '> 0' or 'in [0, 1)'; '' if unbounded."""
    low = high = None
    for m in TrainConfig.model_fields[name].metadata:
        if isinstance(m, (at.Ge, at.Gt)):
            low = ("[", m.ge) if isinstance(m, at.Ge) else ("(", m.gt)
        elif isinstance(m, (at.Le, at.Lt)):
            high = ("]", m.le) if isinstance(m, at.Le) else (")", m.lt)
    if low and high:
        return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]}"
    return f"{'<=' if high[0] == ']' else '<'} {high[1]}" if high else ""


def _expected(name: str) -> str:
    kind, choices = setting_type(name)
    if choices:
        return f"one of {', '.join(choices)}"
    if kind is list:
        return "comma-separated positive integers"
    limits = setting_range(name)
    if kind is int:
        return {">= 1": "a positive integer", ">= 0": "a non-negative integer"}.get(limits, f"an integer {limits}")
    return f"a finite number {limits}".strip()


def _example(name: str) -> Any:
    field = TrainConfig.model_fields[name]
    example = (field.json_schema_extra or {}).get("example", field.default)
    return str(example).lower() if isinstance(example, bool) else example


TYPE_ERRORS = (
    "int_parsing",
    "int_type",
    "int_from_float",
    "float_parsing",
    "float_type",
    "bool_type",
    "bool_parsing",
    "string_type",
    "list_type",
)


def _explain(error: Mapping[str, Any], values: Mapping[str, Any], where: str | None = None) -> str:
    """One line for a pydantic error: the flag (or ``where``'s key), what it must be, an example."""
    name = str(error["loc"][0]) if error["loc"] else ""
    if error["type"] == "extra_forbidden" or name not in FIELDS:
        return f"unknown training setting {name!r}; use the flag names, e.g. batch-size, lr, epochs"
    key = name.replace("_", "-")
    label, fix = (
        (f"--{key}", f"e.g. --{key} {_example(name)}")
        if where is None
        else (f"{where}: {key}", f"e.g. {key}: {_example(name)}")
    )
    value = values.get(name, error.get("input"))
    if error["type"] in TYPE_ERRORS and setting_type(name)[0] is not list:
        kind = setting_type(name)[0].__name__
        return f"{label} must be of type {kind}, got {value!r}; {fix}"
    return f"{label} must be {_expected(name)}, got {value!r}; {fix}"


@cache
def _adapter(name: str) -> TypeAdapter:
    field = TrainConfig.model_fields[name]
    return TypeAdapter(Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation)


def check_settings(values: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
    """Each value checked on its own against its field (type, range, choices); errors name the flag
    (or ``where`` and the key). Returns the values as the fields hold them (e.g. "2,4" -> [2, 4])."""
    checked = {}
    for name, value in values.items():
        if name not in FIELDS:
            raise UserError(_explain({"type": "extra_forbidden", "loc": (name,)}, values, where))
        try:
            checked[name] = _adapter(name).validate_python(value)
        except ValidationError as e:
            raise UserError(_explain({**e.errors()[0], "loc": (name,)}, values, where)) from None
    return checked


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    raw = read_yaml_mapping(path)
    out = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            raise UserError(f"config file {path}: unknown key {key!r}; use the flag names, e.g. batch-size, lr, epochs")
        out[name] = value
    return check_settings(out, where=f"config file {path}")


def resolve_config(overrides: Mapping[str, Any], config_file: str | None = None) -> TrainConfig:
    """Merge defaults, the dataset's recipe, a YAML file and explicit overrides (None means 'not given')."""
    given = {k: v for k, v in overrides.items() if v is not None}
    from_file = load_yaml_config(config_file) if config_file else {}
    data = given.get("data", from_file.get("data", TrainConfig.model_fields["data"].default))
    recipe = given.get("recipe", from_file.get("recipe", DEFAULT_RECIPE.get(data)))
    if recipe is not None and recipe not in RECIPES:  # None: an unknown --data, which validate() reports
        raise UserError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    chosen = RECIPES.get(recipe, {})
    cfg = TrainConfig(**{**chosen, **from_file, **given, "recipe": recipe})
    cfg._from_recipe = frozenset(chosen) - set(from_file) - set(given)
    return cfg
