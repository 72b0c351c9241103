"""Entry points for the ecosystem, derived from the registry's published models (those registered
with a pretrained_cfg: the SkipNet family): ``timm.create_model("skipnet_m")`` and
``torch.hub.load(REPO, "skipnet_m", source="local")`` (hubconf.py) build the same models as
``skipnet.create_model``. Nothing is downloaded: there are no hosted weights, so trained weights
come from a path (a run directory, .safetensors or a state_dict .pth) through ``weights=``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from torch import nn

from .registry import ModelEntry, published

_registered = False


def _entrypoint(entry: ModelEntry) -> Callable[..., nn.Module]:
    def build(
        pretrained: bool = False, num_classes: int | None = None, weights: str | None = None, **kwargs: Any
    ) -> nn.Module:
        from . import create_model

        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's factory passes these;
            kwargs.pop(key, None)  # nothing is hosted or downloaded, so they have nothing to say
        if pretrained:
            raise ValueError(
                f"{entry.name}: no pretrained weights are hosted (nothing is downloaded); train one with "
                f"skipnet-train --model {entry.name} and pass weights=RUN_DIR"
            )
        return create_model(entry.name, num_classes, weights=weights, **kwargs)

    build.__name__ = build.__qualname__ = entry.name
    # timm files an entry point under its __module__ and reads that module's default_cfgs.
    build.__module__ = entry.builder.__module__
    build.__doc__ = f"{entry.builder.__doc__} weights: a run directory, .safetensors or .pth file."
    return build


def torch_hub_entrypoints() -> dict[str, Callable[..., nn.Module]]:
    """{name: entry point} for hubconf.py."""
    return {e.name: _entrypoint(e) for e in published()}


def register_timm() -> bool:
    """Register the published models with timm when it is installed (once); False when it is not."""
    global _registered
    if _registered:
        return True
    if importlib.util.find_spec("timm") is None:
        return False
    from timm.models import register_model

    for entry in published():
        register_model(_entrypoint(entry))
    _registered = True
    return True
