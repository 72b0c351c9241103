"""Training configuration: defaults < dataset recipe < --config YAML < command-line flags."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..common import UserError, read_yaml_mapping
from ..data import dataset_spec, list_datasets

LOSSES = ("bias", "ce")
NORMALIZATIONS = ("global", "local")
OPTIMIZERS = ("sgd", "adamw", "rmsprop")
SCHEDULERS = ("cosine", "multistep", "constant")


@dataclass
class TrainConfig:
    model: str = "skipnet_s"
    data: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    out: str | None = None
    weights: str | None = None  # initialise from a checkpoint (run dir, .safetensors, .pth)
    reset_head: bool = False  # ... except its final classifier (fine-tuning on other classes)
    # loss
    loss: str = "bias"
    alpha: float = 0.3
    beta: float = 0.3
    normalization: str = "global"
    label_smoothing: float = 0.0
    # schedule
    epochs: int = 10
    batch_size: int = 128  # global batch, split across processes under torchrun
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: str = "cosine"
    milestones: list[int] = field(default_factory=list)  # epochs, for --scheduler multistep
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    # data
    img_size: int | None = None
    limit_train: int | None = None
    limit_val: int | None = None
    workers: int = 0
    # run
    seed: int = 0
    deterministic: bool = False
    save_every: int = 200  # steps; a checkpoint is also written at every epoch end
    ema: bool = False
    ema_decay: float = 0.999
    amp: bool = False
    channels_last: bool = True  # measured ~3x faster training steps on CPU (README)
    device: str = "auto"
    recipe: str | None = None  # the named recipe the unset fields came from (RECIPES)

    def validate(self) -> "TrainConfig":
        from ..models import list_models

        def choose(flag: str, value: str, options) -> None:
            if value not in options:
                raise UserError(f"unknown {flag} {value!r}; choose one of: {', '.join(options)}")

        choose("--model", self.model, list_models())
        choose("--data", self.data, list_datasets())
        choose("--loss", self.loss, LOSSES)
        choose("--normalization", self.normalization, NORMALIZATIONS)
        choose("--optimizer", self.optimizer, OPTIMIZERS)
        choose("--scheduler", self.scheduler, SCHEDULERS)
        choose("--device", self.device, ("auto", "cpu", "cuda"))
        for flag, value in [("--epochs", self.epochs), ("--batch-size", self.batch_size)]:
            if value is None or value < 1:
                raise UserError(f"{flag} must be a positive integer, got {value}")
        for flag, value in [("--limit-train", self.limit_train), ("--limit-val", self.limit_val),
                            ("--img-size", self.img_size)]:
            if value is not None and value < 1:
                raise UserError(f"{flag} must be a positive integer, got {value}")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if self.weight_decay < 0 or self.workers < 0 or self.save_every < 0:
            raise UserError("--weight-decay, --workers and --save-every must not be negative")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 < self.ema_decay < 1:
            raise UserError(f"--ema-decay must be in (0, 1), got {self.ema_decay}")
        if self.scheduler == "multistep" and not self.milestones:
            raise UserError("--scheduler multistep needs --milestones, e.g. --milestones 80,122")
        if dataset_spec(self.data).needs_data_dir and not self.data_dir:
            raise UserError(f"--data {self.data} needs --data-dir DIR holding {dataset_spec(self.data).data_dir_holds}")
        if not self.out:
            raise UserError("--out DIR is required: the run directory to write")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Named recipes: the settings a run starts from before --config and flags. Each dataset has a
# default; `--recipe NAME` picks another (e.g. the paper's CIFAR recipe on any dataset).
RECIPES: dict[str, dict[str, Any]] = {
    # Fashion-MNIST on a CPU in minutes: 3 epochs reach ~89.7% top-1 with SkipNet-S (README).
    "fast": dict(model="skipnet_s", epochs=3, batch_size=128, optimizer="sgd", lr=0.2,
                 weight_decay=5e-5, scheduler="cosine", warmup_epochs=0.3, label_smoothing=0.1),
    # The same schedule run 10x longer: the Fashion-MNIST accuracy table (hours on a CPU).
    "full": dict(model="skipnet_s", epochs=30, batch_size=128, optimizer="sgd", lr=0.2,
                 weight_decay=5e-5, scheduler="cosine", warmup_epochs=1.0, label_smoothing=0.1),
    # The paper's CIFAR recipe (paper.md): SGD 0.1, momentum 0.9, wd 1e-4, batch 128, 160 epochs,
    # lr x0.1 at epochs 80 and 122; random crop 32 with padding 4 + horizontal flip come from the data stage.
    "paper": dict(model="skipnet_m", epochs=160, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
                  weight_decay=1e-4, scheduler="multistep", milestones=[80, 122], gamma=0.1,
                  warmup_epochs=0.0, label_smoothing=0.0),
    # Fine-tuning on a user's own image folders.
    "finetune": dict(model="skipnet_m", epochs=30, batch_size=64, optimizer="sgd", lr=0.05, weight_decay=4e-5,
                     scheduler="cosine", warmup_epochs=1.0, label_smoothing=0.1, workers=2),
}
DEFAULT_RECIPE = {name: dataset_spec(name).recipe for name in list_datasets()}  # the dataset table's

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    raw = read_yaml_mapping(path)
    out = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            raise UserError(f"config file {path}: unknown key {key!r}; use the flag names, e.g. batch-size, lr, epochs")
        out[name] = value
    return out


def resolve_config(overrides: Mapping[str, Any], config_file: str | None = None) -> TrainConfig:
    """Merge defaults, the dataset's recipe, a YAML file and explicit overrides (None means 'not given')."""
    given = {k: v for k, v in overrides.items() if v is not None}
    from_file = load_yaml_config(config_file) if config_file else {}
    data = given.get("data", from_file.get("data", TrainConfig.data))
    recipe = given.get("recipe", from_file.get("recipe", DEFAULT_RECIPE.get(data)))
    if recipe is not None and recipe not in RECIPES:  # None: an unknown --data, which validate() reports
        raise UserError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    merged: dict[str, Any] = {**RECIPES.get(recipe, {}), **from_file, **given, "recipe": recipe}
    try:
        cfg = TrainConfig(**merged)
    except TypeError as e:
        raise UserError(f"bad training configuration: {e}") from None
    if isinstance(cfg.milestones, str):
        cfg.milestones = [int(m) for m in cfg.milestones.split(",") if m.strip()]
    _check_types(cfg)
    return cfg


def _check_types(cfg: TrainConfig) -> None:
    # YAML may give strings where numbers are expected; say which key is wrong.
    for f in dataclasses.fields(TrainConfig):
        value = getattr(cfg, f.name)
        if value is None:
            continue
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        try:
            if kind.startswith("int"):
                if isinstance(value, bool) or int(value) != value:
                    raise ValueError
                setattr(cfg, f.name, int(value))
            elif kind.startswith("float"):
                setattr(cfg, f.name, float(value))
            elif kind.startswith("bool") and not isinstance(value, bool):
                raise ValueError
        except (TypeError, ValueError):
            raise UserError(f"{f.name.replace('_', '-')} must be of type {kind.split(' ')[0]}, got {value!r}") from None
