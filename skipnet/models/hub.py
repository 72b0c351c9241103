"""Entry points for the ecosystem, derived from the registry's published models (those registered
with a pretrained_cfg: the SkipNet family).

* timm: ``register_timm()`` gives timm one entry point per model, built with timm's own
  ``build_model_with_cfg``, so ``features_only``, ``out_indices``, ``pretrained_cfg_overlay`` and
  ``timm.data.resolve_data_config(model=...)`` work as for timm's models. Its ``__module__`` is
  the module that defines the builder (``skipnet.models.skipnet``, timm's module name "skipnet"),
  whose ``default_cfgs`` timm reads. ``import skipnet`` calls it once timm is imported.
* torch.hub: ``torch_hub_entrypoints()``, which hubconf.py exposes, builds through
  ``skipnet.create_model``.

Nothing is downloaded: no weights are hosted. Trained weights come from a run directory (its
config.json also sets the model's pretrained_cfg: the run's classes and preprocessing), a
.safetensors file or a state_dict .pth, through ``weights=``; timm users may also pass
``pretrained=True, pretrained_cfg_overlay=dict(file=PATH)``.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from ..common.contract import RESIZE_INTERPOLATION
from .checkpoint import is_run_dir, load_weights, read_run_config
from .registry import ModelEntry, published

_registered = False


def timm_data_cfg(preprocess: dict[str, Any]) -> dict[str, Any]:
    """A run's "preprocess" section as timm's data config fields: timm's eval transform then resizes
    and crops as skipnet.data.build_transform does (tests/test_hub.py compares their pixels). timm
    has no gray-to-RGB step: for a gray-trained run (grayscale_to_rgb) feed gray images as RGB."""
    crop, resize = preprocess["crop"], preprocess["resize"]
    return {
        "input_size": (3, crop, crop),
        "interpolation": RESIZE_INTERPOLATION,
        "crop_pct": _crop_pct(crop, resize),
        "crop_mode": "center",
        "mean": tuple(preprocess["mean"]),
        "std": tuple(preprocess["std"]),
    }


def _crop_pct(crop: int, resize: int) -> float:
    """crop / resize, nudged down where rounding would make timm resize one pixel short (it resizes
    to floor(crop / crop_pct): 64 / (64 / 93) is 92.99999999999999)."""
    pct = crop / resize
    while math.floor(crop / pct) < resize:
        pct = math.nextafter(pct, 0.0)
    return pct


def run_pretrained_cfg(run_dir: str | os.PathLike, entry: ModelEntry) -> dict[str, Any]:
    """The pretrained_cfg fields a run's weights come with: its classes and its preprocessing."""
    config = read_run_config(run_dir)
    cfg = timm_data_cfg(config["preprocess"])
    stride = entry.pretrained_cfg["input_size"][-1] // entry.pretrained_cfg["pool_size"][-1]
    side = cfg["input_size"][-1] // stride
    return {
        **cfg,
        "num_classes": int(config["num_classes"]),
        "label_names": tuple(config["class_names"]),
        "pool_size": (side, side),
        "description": f"{config['model']} trained by skipnet-train on {config['dataset']} ({os.fspath(run_dir)})",
    }


def _build(entry: ModelEntry, weights, reset_head: bool, **kwargs: Any) -> nn.Module:
    model = entry.builder(**kwargs)
    model.model_name = entry.name
    if weights is not None:
        load_weights(model, weights, name=entry.name, reset_head=reset_head)
    return model


def _no_hosted_weights(name: str) -> ValueError:
    return ValueError(
        f"{name}: no pretrained weights are hosted (nothing is downloaded); train one with "
        f"skipnet-train --model {name} and pass weights=RUN_DIR, or pretrained_cfg_overlay=dict(file=PATH)"
    )


def _timm_entrypoint(entry: ModelEntry) -> Callable[..., nn.Module]:
    def build(pretrained: bool = False, weights=None, reset_head: bool = False, **kwargs: Any) -> nn.Module:
        from timm.models import build_model_with_cfg  # timm is loaded: it calls this

        overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
        if weights is not None and is_run_dir(weights):
            overlay = {**run_pretrained_cfg(weights, entry), **overlay}
        _check_weight_source(entry.name, pretrained, weights, kwargs.get("pretrained_cfg"), overlay)
        feature_cfg = {"feature_cls": "getter", **(kwargs.pop("feature_cfg", None) or {})}
        if "feature_cls" in kwargs:
            feature_cfg["feature_cls"] = kwargs.pop("feature_cls")
        if getattr(feature_cfg["feature_cls"], "__name__", feature_cfg["feature_cls"]) not in _GETTER:
            # The skip blocks join inside forward(): hooks on modules or FX nodes would miss them.
            raise ValueError(f"{entry.name}: features come from forward_intermediates (feature_cls='getter')")
        model_cls = partial(_build, entry, weights, reset_head)
        return build_model_with_cfg(
            model_cls, entry.name, pretrained, pretrained_cfg_overlay=overlay, feature_cfg=feature_cfg, **kwargs
        )

    return _named(build, entry, "(timm) weights: a run directory, .safetensors or .pth file.")


_GETTER = ("getter", "FeatureGetterNet")


def _check_weight_source(name: str, pretrained: bool, weights, pretrained_cfg, overlay: dict[str, Any]) -> None:
    from timm.models import resolve_pretrained_cfg

    if not pretrained:
        return
    if weights is not None:
        raise ValueError(f"{name}: pass weights= or pretrained=True with a file, not both")
    if not (overlay.get("state_dict") or resolve_pretrained_cfg(name, pretrained_cfg, overlay).has_weights):
        raise _no_hosted_weights(name)


def _hub_entrypoint(entry: ModelEntry) -> Callable[..., nn.Module]:
    def build(pretrained: bool = False, num_classes: int | None = None, weights=None, **kwargs: Any) -> nn.Module:
        from . import create_model

        if pretrained:
            raise _no_hosted_weights(entry.name)
        return create_model(entry.name, num_classes, weights=weights, **kwargs)

    return _named(build, entry, "weights: a run directory, .safetensors or .pth file; num_classes for a new head.")


def _named(fn: Callable[..., nn.Module], entry: ModelEntry, usage: str) -> Callable[..., nn.Module]:
    fn.__name__ = fn.__qualname__ = entry.name
    fn.__module__ = entry.builder.__module__  # timm files it under this module and reads its default_cfgs
    fn.__doc__ = f"{(entry.builder.__doc__ or entry.name).strip()} {usage}"
    return fn


def torch_hub_entrypoints() -> dict[str, Callable[..., nn.Module]]:
    """{name: entry point} for hubconf.py."""
    return {e.name: _hub_entrypoint(e) for e in published()}


def register_timm() -> bool:
    """Register the published models with timm when it is installed (once); False when it is not."""
    global _registered
    if _registered:
        return True
    if importlib.util.find_spec("timm") is None:
        return False
    from timm.models import register_model

    for entry in published():
        register_model(_timm_entrypoint(entry))
    _registered = True
    return True
