"""Models stage: the SkipNet family and torchvision baselines behind one registry.

Usage:

    model = create_model("skipnet_m", num_classes=10)
    features = model.forward_features(x)   # Bias Loss features, before pooling
    logits = model.forward_head(features)
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ..common import UserError

# The SkipNet family registers first, so list_models() names it before the baselines.
from .skipnet import SkipNet, make_divisible  # isort: skip
from . import baselines  # noqa: F401  (registers the torchvision baselines)  # isort: skip
from .checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    is_run_dir,
    load_weights,
    read_run_config,
    read_state_dict,
    save_weights,
)
from .complexity import count_macs, count_params
from .pixels import PixelModel
from .registry import get_builder, list_models, register_model


def create_model(
    name: str,
    num_classes: int | None = None,
    weights: str | os.PathLike | None = None,
    reset_head: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model; ``weights`` is a run directory, a .safetensors file or a state_dict .pth.

    ``num_classes`` defaults to the run directory's class count, else 1000 (ImageNet).
    ``reset_head=True`` loads everything but the final classifier (fine-tuning on other classes).
    """
    builder = get_builder(name)
    if num_classes is None:
        num_classes = int(read_run_config(weights)["num_classes"]) if weights and is_run_dir(weights) else 1000
    if weights is not None and not os.path.exists(weights):
        raise UserError(f"weights {weights} does not exist; pass a run directory, .safetensors or .pth file")
    if num_classes < 1:
        raise UserError(f"num_classes must be positive, got {num_classes}")
    if weights is not None and is_run_dir(weights):
        trained_as = read_run_config(weights)["model"]
        if trained_as != name:
            raise UserError(f"{weights} holds a {trained_as} model, not {name}; use --model {trained_as}")
    model = builder(num_classes=num_classes, **kwargs)
    model.model_name = name
    model.num_classes = num_classes
    if weights is not None:
        load_weights(model, weights, name=name, reset_head=reset_head)
    return model


def load_checkpoint(run_dir: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a run directory in eval mode; returns (model, config)."""
    config = read_run_config(run_dir)
    model = create_model(config["model"], int(config["num_classes"]), weights=run_dir)
    return model.eval(), config


__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "PixelModel",
    "SkipNet",
    "count_macs",
    "count_params",
    "create_model",
    "list_models",
    "load_checkpoint",
    "load_weights",
    "make_divisible",
    "read_run_config",
    "read_state_dict",
    "register_model",
    "save_weights",
]
