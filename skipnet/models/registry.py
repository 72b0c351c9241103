"""Model registry: names -> builders, so every stage creates models the same way."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..common import UserError

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} registered twice")
        _BUILDERS[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    return list(_BUILDERS)


def get_builder(name: str) -> Callable[..., nn.Module]:
    try:
        return _BUILDERS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(_BUILDERS)}") from None
