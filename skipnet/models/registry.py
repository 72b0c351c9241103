"""Model registry: names -> builders, so every stage creates models the same way.

Each model is registered once, where its builder is defined:

    @register_model(pretrained_cfg={...})
    def skipnet_m(num_classes: int = 1000, **kwargs) -> SkipNet: ...

The builder's name is the model's name. A ``pretrained_cfg`` (timm's fields: input size,
mean/std, first conv, classifier, ...) marks a model published to the ecosystem:
``skipnet.models.hub`` derives the timm and torch.hub entry points from these entries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..common import UserError

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Builder
    pretrained_cfg: Mapping[str, Any] | None  # None: not published to timm / torch.hub


_ENTRIES: dict[str, ModelEntry] = {}


def register_model(pretrained_cfg: Mapping[str, Any] | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register ``fn`` under ``fn.__name__``; ``fn(num_classes=..., **kwargs)`` builds the model."""

    def deco(fn: Builder) -> Builder:
        if fn.__name__ in _ENTRIES:
            raise ValueError(f"model {fn.__name__!r} registered twice")
        _ENTRIES[fn.__name__] = ModelEntry(fn.__name__, fn, dict(pretrained_cfg) if pretrained_cfg else None)
        return fn

    return deco


def list_models() -> list[str]:
    return list(_ENTRIES)


def get_entry(name: str) -> ModelEntry:
    try:
        return _ENTRIES[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(_ENTRIES)}") from None


def get_builder(name: str) -> Builder:
    return get_entry(name).builder


def published() -> list[ModelEntry]:
    """The entries with a pretrained_cfg: what timm and torch.hub offer."""
    return [e for e in _ENTRIES.values() if e.pretrained_cfg is not None]


def pretrained_cfgs(module: str) -> dict[str, dict[str, Any]]:
    """{name: pretrained_cfg} of the published models whose builders ``module`` defines: the module's
    ``default_cfgs``, which timm's register_model reads from the entry point's module."""
    return {e.name: dict(e.pretrained_cfg) for e in published() if e.builder.__module__ == module}
