"""Entry points for the ecosystem: ``timm.create_model("skipnet_m")`` and
``torch.hub.load(REPO, "skipnet_m", source="local")`` (hubconf.py) build the same models as
``skipnet.create_model``. Nothing is downloaded: there are no hosted weights, so trained weights
come from a path (a run directory, .safetensors or a state_dict .pth) through ``weights=``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from torch import nn

SKIPNET_FAMILY = ("skipnet_xs", "skipnet_s", "skipnet_m", "skipnet_l")


def _entrypoint(name: str) -> Callable[..., nn.Module]:
    def build(
        pretrained: bool = False, num_classes: int | None = None, weights: str | None = None, **kwargs: Any
    ) -> nn.Module:
        from . import create_model

        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's factory passes these;
            kwargs.pop(key, None)  # nothing is hosted or downloaded, so they have nothing to say
        if pretrained:
            raise ValueError(
                f"{name}: no pretrained weights are hosted (nothing is downloaded); train one with "
                f"skipnet-train --model {name} and pass weights=RUN_DIR"
            )
        return create_model(name, num_classes, weights=weights, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__module__ = __name__
    build.__doc__ = f"{name} (SkipNet family, Bias Loss paper). weights: a run directory, .safetensors or .pth."
    return build


ENTRYPOINTS = {name: _entrypoint(name) for name in SKIPNET_FAMILY}
globals().update(ENTRYPOINTS)  # skipnet.models.hub.skipnet_m etc., for hubconf.py
__all__ = ["SKIPNET_FAMILY", "ENTRYPOINTS", "register_timm", *SKIPNET_FAMILY]
_registered = False


def register_timm() -> bool:
    """Register the family with timm when it is installed (once); False when it is not."""
    global _registered
    if _registered:
        return True
    if importlib.util.find_spec("timm") is None:
        return False
    from timm.models import register_model

    for fn in ENTRYPOINTS.values():
        register_model(fn)  # timm reads fn.__module__ / __name__: this module, the model's name
    _registered = True
    return True
