"""Bias Loss (Abrahamyan et al., ICCV 2021): cross-entropy re-weighted by each sample's feature-map variance.

    L = mean_i [ (exp(alpha * normalise(Var(F_i))) - beta) * CE(x_i, y_i) ]

``Var(F_i)`` is the unbiased variance of all C*H*W values of sample ``i``'s feature map
(the last convolutional feature map before global pooling), computed on detached
features in float32. Samples whose features are less diverse get a smaller weight.
See ``docs/paper.md``, section "Bias Loss", for the specification, and
:class:`skipnet.models.features.FeatureTap` for getting the features out of a model
without changing it.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.features import bias_weights, sample_variance

__all__ = ["BiasLoss", "NORMALIZATIONS", "sample_variance"]

NORMALIZATIONS = ("global", "local")


def _distributed_world_size() -> int:
    """World size of the default process group, or 1 when torch.distributed is not in use."""
    dist = torch.distributed
    if not dist.is_available() or not dist.is_initialized():
        return 1
    return dist.get_world_size()


def _no_autocast(device_type: str):
    """Turn autocast off (if it is on) so everything here really runs in float32.

    Inside ``torch.autocast`` some ops would otherwise be cast down again, e.g.
    ``linalg.vecdot`` runs in bfloat16 under CPU autocast.
    """
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.autocast(device_type=device_type, enabled=False)
    except (RuntimeError, TypeError, ValueError):  # a device type autocast does not know
        pass
    return contextlib.nullcontext()


class BiasLoss(nn.Module):
    r"""Bias Loss: ``L = mean_i z_i * CE(x_i, y_i)`` with ``z_i = exp(alpha * v^_i) - beta``.

    Call as ``loss(logits, target, features=F)``: ``logits`` is ``(N, classes)``,
    ``target`` anything :func:`torch.nn.functional.cross_entropy` accepts for it
    (class indices or class probabilities), and ``F`` is the ``(N, ...)`` feature
    map of the same samples (e.g. ``FeatureTap(model).features``). Returns a scalar
    float32 tensor. The weights ``z_i`` carry no gradient: only the cross-entropy
    terms are differentiated (the features are detached).

    Per-sample variance ``v_i``: unbiased (``torch.var`` default) over all values of
    ``F_i``; features and logits are cast to float32 first, so the loss is safe
    under mixed precision (fp16/bf16 activations). It is computed two-pass
    (mean, then sum of squared deviations), which matches ``torch.var`` to float32
    rounding and is about 10x faster on CPU.

    Normalisation ``v^`` (``normalization=``):

    * ``"local"``: ``v^ = (v - min_batch v) / (max_batch v - min_batch v)``; ``v^`` in [0, 1].
    * ``"global"`` (the reference default, which produced the published numbers):
      a running minimum ``m`` over every batch seen so far is updated with the
      batch minimum *before* it is used, ``m = min(m, min_batch v)``, and
      ``v^ = (v - m) / (max_batch v - min_batch v)`` -- divided by the *current
      batch's* range, so ``v^`` can exceed 1. ``m`` is the persistent float32
      buffer ``running_min`` (in ``state_dict``, hence in checkpoints, so a
      resumed run continues identically). It starts at ``+inf``; the reference
      starts at 100000, which differs only if every variance ever seen is above
      1e5 (then the reference would use 1e5 as the minimum, this uses the true one).

    Train / eval: ``running_min`` is only written in training mode
    (``self.training``). In eval mode the loss is computed exactly as a training
    step would compute it on the same batch (with ``min(m, min_batch v)``, which is
    the batch minimum while ``m`` is still ``+inf``) but ``m`` is left unchanged.

    Guards (the reference returns NaN/inf in these cases; this never does):

    * Degenerate range: when ``max_batch v - min_batch v <= range_rtol * max_batch v``
      (exactly 0 for a batch of one or identical feature maps, or so small
      relative to the variances that it is float32 rounding noise, default
      ``range_rtol = 1e-6``), ``v^ = 0`` for every sample, so ``z = 1 - beta``.
      This also bounds ``v^`` by ``1 / range_rtol``.
    * Exponent ceiling: ``alpha * v^`` is clamped to at most ``max_exponent``
      (default 20, a weight of at most ``e^20 ~ 4.9e8``) so ``exp`` cannot
      overflow; this can only bind in global mode, when a batch's range is tiny
      compared with its distance from the running minimum.
    * Non-finite variances (features containing inf/NaN, or values so large
      that the float32 variance overflows) are mapped NaN -> 0 and
      +inf -> float32 max before normalising, so the weights stay finite.

    Data parallel: when ``torch.distributed`` is initialised with world size > 1
    and ``sync=True`` (default), the batch minimum and maximum of ``v`` are
    all-reduced across ranks (one ``all_reduce(MIN)`` on ``[min, -max]``), and the
    running minimum is updated with the global minimum. Every rank then
    normalises exactly as a single process would on the global batch, and with
    equal shard sizes the mean of the per-rank losses (what DDP's gradient
    averaging optimises) equals the single-process loss on the concatenated batch.
    Every rank must call the loss the same number of times (it is a collective).

    ``last_weights`` holds the detached weights ``z`` of the last call (for logging).
    """

    running_min: Tensor

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.3,
        normalization: str = "global",
        label_smoothing: float = 0.0,
        sync: bool = True,
        max_exponent: float = 20.0,
        range_rtol: float = 1e-6,
    ):
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"BiasLoss normalization must be one of {', '.join(map(repr, NORMALIZATIONS))}, got {normalization!r}"
            )
        for name, value in (("alpha", alpha), ("beta", beta), ("max_exponent", max_exponent)):
            if not math.isfinite(float(value)):
                raise ValueError(f"BiasLoss {name} must be a finite number, got {value!r}")
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"BiasLoss label_smoothing must be in [0, 1], got {label_smoothing!r}")
        if not 0.0 <= float(range_rtol) < 1.0:
            raise ValueError(f"BiasLoss range_rtol must be in [0, 1), got {range_rtol!r}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.normalization = normalization
        self.label_smoothing = float(label_smoothing)
        self.sync = bool(sync)
        self.max_exponent = float(max_exponent)
        self.range_rtol = float(range_rtol)
        self.register_buffer("running_min", torch.tensor(float("inf"), dtype=torch.float32), persistent=True)
        self.last_weights: Tensor | None = None

    def extra_repr(self) -> str:
        s = f"alpha={self.alpha}, beta={self.beta}, normalization={self.normalization!r}"
        if self.label_smoothing:
            s += f", label_smoothing={self.label_smoothing}"
        if not self.sync:
            s += ", sync=False"
        return s

    def reset_running_min(self) -> None:
        """Forget the running minimum (start of a new, unrelated training run)."""
        with torch.no_grad():
            self.running_min.fill_(float("inf"))

    # -- the weights ---------------------------------------------------------------------------

    def _check(self, logits: Tensor, features: Tensor | None) -> None:
        if features is None:
            raise ValueError(
                "BiasLoss needs the feature map: call loss(logits, target, features=F), "
                "e.g. with F = FeatureTap(model).features after logits = model(x)"
            )
        if not isinstance(features, Tensor) or not isinstance(logits, Tensor):
            raise ValueError("BiasLoss: logits and features must be tensors")
        if logits.dim() != 2:
            raise ValueError(f"BiasLoss: logits must be (N, classes), got shape {tuple(logits.shape)}")
        if features.dim() < 2:
            raise ValueError(
                f"BiasLoss: features must be (N, ...) with a batch dimension, got shape {tuple(features.shape)}"
            )
        if features.shape[0] != logits.shape[0]:
            raise ValueError(
                f"BiasLoss: features batch size {features.shape[0]} != logits batch size {logits.shape[0]}; "
                "the features must come from the same forward pass as the logits"
            )
        if features.shape[0] > 0 and features[0].numel() < 2:
            raise ValueError(
                f"BiasLoss: each sample's feature map needs at least 2 values for an unbiased variance, "
                f"got shape {tuple(features.shape)}"
            )

    @torch.no_grad()
    def weights(self, features: Tensor) -> Tensor:
        """Per-sample weights ``z`` of one batch (float32, no grad), as ``forward`` computes them;
        updates ``running_min`` in global training mode."""
        v = sample_variance(features)
        if v.numel() > 0:
            bmin, bmax = torch.aminmax(v)
        else:  # an empty shard still takes part in the all-reduce, with neutral values
            bmin = v.new_tensor(float("inf"))
            bmax = v.new_tensor(float("-inf"))

        if self.sync and _distributed_world_size() > 1:
            packed = torch.stack([bmin, -bmax])
            torch.distributed.all_reduce(packed, op=torch.distributed.ReduceOp.MIN)
            bmin, bmax = packed[0], -packed[1]

        if self.normalization == "global":
            m = self.running_min
            if m.device != v.device or m.dtype != torch.float32:  # module not moved with the data, or .half()'d
                m = self.running_min = m.to(device=v.device, dtype=torch.float32)
            lo = torch.minimum(m, bmin)  # update before use
            if self.training:
                m.copy_(lo)
        else:
            lo = bmin

        z = bias_weights(v, lo, bmin, bmax, self.alpha, self.beta, self.max_exponent, self.range_rtol)
        self.last_weights = z
        return z

    # -- the loss ------------------------------------------------------------------------------

    def forward(self, logits: Tensor, target: Tensor, features: Tensor | None = None) -> Tensor:
        self._check(logits, features)
        with _no_autocast(logits.device.type):
            z = self.weights(features)
            ce = F.cross_entropy(logits.float(), target, reduction="none", label_smoothing=self.label_smoothing)
        if ce.numel() == 0:  # empty shard: a zero that is still connected to the graph
            return logits.float().sum() * 0.0
        return (z * ce).mean()
