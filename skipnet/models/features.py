"""A model's Bias Loss feature map, and what Bias Loss reads from it.

    tap = FeatureTap(model)            # hooks model.get_submodule(model.feature_layer)
    logits = model(x)                  # one forward (DDP's forward, when wrapped)
    v = sample_variance(tap.features)  # each sample's feature-map variance

Why a forward hook: under DistributedDataParallel the training loop must call
``model(x)`` exactly once (DDP's forward prepares the gradient all-reduce), so it
cannot call ``forward_features`` and ``forward_head`` separately. A hook gives the
features of that same forward without changing the model.

The variance and the weight formula live here, below training, because both the loss
(skipnet.training.BiasLoss) and the runtime's feature-variance report read them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["FeatureTap", "bias_weights", "sample_variance", "unwrap_model"]

_F32_MAX = torch.finfo(torch.float32).max


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


@torch.no_grad()
def sample_variance(features: Tensor) -> Tensor:
    """Each sample's unbiased variance over all values of its feature map, in float32 (N,), as Bias
    Loss weighs it: non-finite values are mapped NaN -> 0 and +inf -> float32 max."""
    f = features.detach().flatten(1).float()
    if f.shape[0] == 0:
        return f.new_zeros(0)
    # The same estimator as torch.var, but two-pass (mean, then the sum of squared deviations): torch.var's
    # per-row Welford kernel is ~10x slower on CPU for (128, 960) features, with the same float32 accuracy.
    d = f - f.mean(dim=1, keepdim=True)
    v = torch.linalg.vecdot(d, d) / (f.shape[1] - 1)
    # inf/NaN features (or float32 overflow of the variance) must not turn the weights into NaN.
    return torch.nan_to_num(v, nan=0.0, posinf=_F32_MAX, neginf=0.0)


@torch.no_grad()
def bias_weights(
    v: Tensor,
    lo: Tensor,
    bmin: Tensor,
    bmax: Tensor,
    alpha: float,
    beta: float,
    max_exponent: float = 20.0,
    range_rtol: float = 1e-6,
) -> Tensor:
    """Bias Loss's weights ``z = exp(alpha * v^) - beta`` for variances ``v``, with
    ``v^ = (v - lo) / (bmax - bmin)``: ``lo`` is the batch minimum (local normalisation, or any call
    outside training) or the running minimum (global). A range within float32 noise of zero gives
    ``v^ = 0``; the exponent is clamped at ``max_exponent``. See BiasLoss for the why of each."""
    rng = bmax - bmin
    degenerate = rng <= range_rtol * bmax  # also true for rng == 0 (and for the all-zero case)
    safe_rng = torch.where(degenerate, torch.ones_like(rng), rng)
    vhat = torch.where(degenerate, torch.zeros_like(v), (v - lo) / safe_rng)
    return torch.exp(torch.clamp(vhat * alpha, max=max_exponent)) - beta
