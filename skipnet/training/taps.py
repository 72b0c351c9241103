"""FeatureTap: read a model's Bias Loss feature map during its ordinary forward pass.

    tap = FeatureTap(model)            # hooks model.get_submodule(model.feature_layer)
    logits = model(x)                  # one forward (DDP's forward, when wrapped)
    loss = bias_loss(logits, y, features=tap.features)

Why a forward hook: under DistributedDataParallel the training loop must call
``model(x)`` exactly once (DDP's forward prepares the gradient all-reduce), so it
cannot call ``forward_features`` and ``forward_head`` separately. A hook gives the
features of that same forward without changing the model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["FeatureTap", "unwrap_model"]


def _wrapper_chain(model: nn.Module) -> list[nn.Module]:
    """``model`` and every model it wraps: DDP / DataParallel / plain wrappers (``.module``), torch.compile
    (``._orig_mod``)."""
    chain = [model]
    seen = {id(model)}
    while True:
        m = chain[-1]
        inner = getattr(m, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(m, "module", None)
        if not isinstance(inner, nn.Module) or id(inner) in seen:
            return chain
        chain.append(inner)
        seen.add(id(inner))


def unwrap_model(model: nn.Module) -> nn.Module:
    """The innermost model under DDP / DataParallel / torch.compile / ``.module`` wrappers."""
    return _wrapper_chain(model)[-1]


class FeatureTap:
    """Capture the output of one submodule of ``model`` on every forward pass.

    ``layer`` is a dotted module path (``nn.Module.get_submodule``); by default the
    model's ``feature_layer`` attribute (e.g. ``"conv"`` for SkipNet). Wrappers are
    looked through: for ``DistributedDataParallel(model)``, ``torch.compile(model)``
    or any module that keeps the real model in ``.module`` / ``._orig_mod``, the
    path is resolved on the first model in the wrapper chain that has it, so both
    ``"conv"`` and ``"module.conv"`` work for a DDP-wrapped SkipNet.

    After ``logits = model(x)``, ``tap.features`` is the hooked module's output of
    that forward pass: the tensor itself, part of the autograd graph, not detached
    or copied (``BiasLoss`` detaches it). If a later layer modified that output in
    place, ``tap.features`` would show the modified values; SkipNet's feature
    layer is followed by pooling only, which does not.

    Use as a context manager (``with FeatureTap(model) as tap: ...``) or call
    ``remove()`` to take the hook off; after that nothing more is captured.
    """

    def __init__(self, model: nn.Module, layer: str | None = None):
        if not isinstance(model, nn.Module):
            raise ValueError(f"FeatureTap needs an nn.Module, got {type(model).__name__}")
        chain = _wrapper_chain(model)
        if layer is None:
            owner = next((m for m in chain if isinstance(getattr(m, "feature_layer", None), str)), None)
            if owner is None:
                raise ValueError(
                    f"{type(chain[-1]).__name__} has no 'feature_layer' attribute; pass the layer explicitly, "
                    "e.g. FeatureTap(model, layer='layer4')"
                )
            layer = owner.feature_layer
            chain = chain[chain.index(owner) :]
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"FeatureTap layer must be a non-empty dotted module path, got {layer!r}")
        module = None
        for m in chain:
            try:
                module = m.get_submodule(layer)
                break
            except AttributeError:
                continue
        if module is None:
            raise ValueError(
                f"{type(chain[-1]).__name__} has no submodule {layer!r}; "
                f"top-level children are: {', '.join(n for n, _ in chain[-1].named_children()) or '(none)'}"
            )
        self.layer: str = layer
        self.module: nn.Module = module
        self.features: Any = None
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.features = output

    @property
    def active(self) -> bool:
        return self._handle is not None

    def clear(self) -> None:
        """Drop the reference to the last features (frees their memory once the graph is gone)."""
        self.features = None

    def remove(self) -> None:
        """Take the hook off (idempotent); the last captured features stay readable until ``clear()``."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"FeatureTap(layer={self.layer!r}, module={type(self.module).__name__}, active={self.active})"
