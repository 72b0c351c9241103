"""The small-data rule: a recipe's batch size and warm-up fitted to how many images a user's own
dataset has, so that a short run on a few hundred images still takes enough optimiser steps.

For a dataset without a fixed size (image folders), and only for the settings the recipe chose
(not a flag or a --config key):
- batch size: the recipe's, halved while the run would take fewer than MIN_STEPS optimiser steps,
  down to MIN_BATCH; the learning rate scales with it (the linear scaling rule);
- warm-up: at most WARMUP_SHARE of the run's epochs.
A run that still has fewer than MIN_STEPS steps (any dataset, any batch size) gets one line at its
start saying so. docs/training.md states the rule for users.
"""

from __future__ import annotations

from ..data import dataset_spec
from .config import TrainConfig

MIN_STEPS = 150
MIN_BATCH = 16
WARMUP_SHARE = 0.1


def run_steps(images: int, batch_size: int, epochs: int) -> int:
    """Optimiser steps of a run: full batches only (the last partial batch of an epoch is dropped)."""
    return images // batch_size * epochs


def _batch_size(cfg: TrainConfig, images: int, world_size: int) -> int:
    b = cfg.batch_size
    while run_steps(images, b, cfg.epochs) < MIN_STEPS and b // 2 >= MIN_BATCH and (b // 2) % world_size == 0:
        b //= 2
    return b


def fit_to_data(cfg: TrainConfig, images: int, world_size: int = 1) -> tuple[TrainConfig, str | None]:
    """``cfg`` with the small-data rule applied for ``images`` training images, and the line to
    print at the start (None when there is nothing to say)."""
    changes = _changes(cfg, images, world_size)
    fitted = TrainConfig(**{**cfg.to_dict(), **changes}) if changes else cfg
    return fitted, _start_line(cfg, fitted, changes, images)


def _changes(cfg: TrainConfig, images: int, world_size: int) -> dict[str, float]:
    """The settings the rule changes: only for datasets without a fixed size, only the recipe's."""
    recipe_chose, changes = cfg.from_recipe, {}
    if dataset_spec(cfg.data).train_images is not None:
        return changes
    if "batch_size" in recipe_chose:
        b = _batch_size(cfg, images, world_size)
        if b != cfg.batch_size:
            changes["batch_size"] = b
            if "lr" in recipe_chose:
                changes["lr"] = cfg.lr * b / cfg.batch_size
    if "warmup_epochs" in recipe_chose:
        w = min(cfg.warmup_epochs, round(WARMUP_SHARE * cfg.epochs, 3))
        if w != cfg.warmup_epochs:
            changes["warmup_epochs"] = w
    return changes


def _start_line(cfg: TrainConfig, fitted: TrainConfig, changes: dict[str, float], images: int) -> str | None:
    steps = run_steps(images, fitted.batch_size, fitted.epochs)
    few = steps < MIN_STEPS
    if not changes and not few:
        return None
    epochs = f"{fitted.epochs} epoch{'s' if fitted.epochs != 1 else ''}"
    if changes:
        now = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in changes.items())
        was = ", ".join(f"{getattr(cfg, k):g}" for k in changes)
        line = (
            f"{images} training images: {now} (the {cfg.recipe} recipe's: {was}), so that {epochs} are "
            f"{steps} optimiser steps"
        )
    else:
        line = (
            f"note: {epochs} of {images} training images at batch size {fitted.batch_size} are {steps} optimiser steps"
        )
    if few:
        return (
            line + f"; with fewer than {MIN_STEPS} a model may not learn to predict from its input: "
            "raise --epochs" + ("" if changes else " or lower --batch-size")
        )
    return line + "; set --batch-size, --lr or --warmup-epochs to choose yourself"
