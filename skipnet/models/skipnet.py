"""SkipNet (the reference code calls it SkipblockNet), from "Bias Loss for Mobile Neural Networks".

A MobileNetV3-Large-like network whose two *skip blocks* carry the low-level
features of the base block to the inputs of stages 2 and 3. The module tree and
the parameter names follow the authors' reference implementation, so their
released ``skipblocknet-m.pth`` loads without renaming keys:

    first_layer.{0,1}          stem conv + BN (+ h-swish)
    base_block.conv.{0..8}     inverted residual 16 -> 16
    blocks.{0..3}.{j}.conv.{0..8}
                               index 6 is SE (fc.{0,2}) or an empty Identity
    skip{1,2}.core_block.{0..7}
    conv.{0,1}                 final 1x1 conv + BN (+ h-swish): the Bias Loss features
    classifier.{0,3}           Linear, h-swish, Dropout, Linear
"""

# No `from __future__ import annotations`: torch.fx copies forward's annotations into the code it
# generates, and TorchScript cannot read that code's string annotations back (timm's FX + script test).
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .registry import pretrained_cfgs, register_model


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` without going more than 10% below it (MobileNet rule)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _act(hswish: bool) -> nn.Module:
    return nn.Hardswish() if hswish else nn.ReLU(inplace=True)


class SqueezeExcite(nn.Module):
    """Global pool -> Linear(C, C/4) -> ReLU -> Linear(C/4, C) -> h-sigmoid -> scale (reference form, Linear layers)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = make_divisible(channels // reduction, 8)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
            nn.Hardsigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        scale = self.fc(self.avg_pool(x).view(n, c)).view(n, c, 1, 1)
        return x * scale


class InvertedResidual(nn.Module):
    """1x1 expand + BN + act, kxk depthwise + BN + act, optional SE, 1x1 linear + BN; identity shortcut when
    shapes allow.

    The expand conv is present even when hidden == in (as in the reference), so the
    indices of ``conv`` are fixed: 0/1/2 expand, 3/4/5 depthwise, 6 SE, 7/8 project.
    """

    def __init__(self, inp: int, hidden: int, out: int, kernel: int, stride: int, se: bool, hswish: bool):
        super().__init__()
        self.identity = stride == 1 and inp == out
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            _act(hswish),
            nn.Conv2d(hidden, hidden, kernel, stride, (kernel - 1) // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            _act(hswish),
            SqueezeExcite(hidden) if se else nn.Identity(),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.identity else self.conv(x)


class SkipBlock(nn.Module):
    """Average pool (kernel = stride) -> 1x1 expand + BN + ReLU -> kxk depthwise + BN + ReLU -> 1x1 linear + BN.

    The reference pools with ``adaptive_avg_pool2d(x, 28)`` / ``(x, 14)``, which is
    the same thing at 224x224 only; kernel = stride pooling is identical there, works at
    any input size divisible by 32 and exports as a plain AVERAGE_POOL_2D.
    """

    def __init__(self, inp: int, hidden: int, out: int, kernel: int, pool: int):
        super().__init__()
        self.pool = nn.AvgPool2d(pool, pool)
        self.core_block = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, kernel, 1, (kernel - 1) // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.core_block(self.pool(x))


@dataclass(frozen=True)
class BlockConfig:
    """One row of the SkipNet table (widths before the width multiplier)."""

    stage: int
    kernel: int
    expansion: float
    out: int
    se: bool
    hswish: bool
    stride: int


# SkipNet-M, exactly as in the paper's reference code (docs/paper.md, "SkipNet-M").
#        stage  k  exp   out   SE     hswish stride
SKIPNET_M_BLOCKS: tuple[BlockConfig, ...] = tuple(
    BlockConfig(*row)
    for row in [
        (1, 3, 4.0, 24, False, False, 2),
        (1, 3, 3.0, 24, False, False, 1),
        (1, 5, 3.0, 40, True, False, 2),
        (1, 5, 3.0, 40, True, False, 1),
        (1, 5, 6.0, 40, True, True, 1),
        (2, 3, 6.0, 80, False, True, 2),
        (2, 3, 2.5, 80, False, True, 1),
        (2, 3, 2.3, 80, False, True, 1),
        (2, 3, 2.3, 80, False, True, 1),
        (3, 3, 6.0, 112, True, True, 1),
        (3, 3, 6.0, 112, True, True, 1),
        (4, 5, 6.0, 160, True, True, 2),
        (4, 5, 6.0, 160, True, True, 1),
        (4, 5, 6.0, 160, True, True, 1),
    ]
)

STEM_WIDTH = 16
HEAD_WIDTH = 1280
# Skip blocks: (expansion, kernel, pool relative to the base block's H/2 output, stage whose output it joins).
SKIP1 = (6.0, 5, 4, 1)  # H/2 -> H/8, joins stage 1 (40 ch)
SKIP2 = (2.3, 3, 8, 2)  # H/2 -> H/16, joins stage 2 (80 ch)


class SkipNet(nn.Module):
    """SkipNet at a given width multiplier; ``SkipNet(width=1.0)`` is SkipNet-M.

    Two views of one network, both kept:

    * this project's: ``forward_features`` returns the Bias Loss features, the final 1x1 conv's map
      before pooling; ``feature_layer = "conv"`` names that module for the training loop's
      FeatureTap, which hooks it during a plain ``model(x)``; ``forward_head`` pools and classifies.
    * timm's: the same two methods (timm's forward_features is also the unpooled final map, with
      ``num_features`` channels), plus ``forward_head(x, pre_logits=True)`` (the ``head_hidden_size``
      vector the last Linear reads), ``get_classifier`` / ``reset_classifier``, ``feature_info``,
      ``forward_intermediates`` and ``prune_intermediate_layers``, which
      ``timm.create_model(..., features_only=True)`` uses.

    Feature levels (``feature_info``; channels of SkipNet-M), the stage outputs:

        0  base_block          16 ch  stride 2    what both skip blocks read
        1  blocks.0 + skip1    40 ch  stride 8
        2  blocks.1 + skip2    80 ch  stride 16
        3  blocks.2           112 ch  stride 16
        4  blocks.3           160 ch  stride 32

    Levels 1 and 2 include the skip block's output added to the stage's; a hook on the module
    that ``feature_info`` names would see the stage without it, so features come from
    ``forward_intermediates`` (timm's FeatureGetterNet), not from hooks or FX node names. Stride 4
    lies inside stage 1 and is no level. The final conv (960 ch) follows level 4 as the head conv
    of timm's EfficientNet does: forward_features includes it, features_only leaves it out.
    """

    # Module path of the Bias Loss features, for FeatureTap.
    feature_layer = "conv"
    # Input side must be a multiple of this (total stride; the skip pools use kernel = stride).
    input_multiple = 32

    def __init__(
        self,
        num_classes: int = 1000,
        width: float = 1.0,
        blocks: Sequence[BlockConfig] = SKIPNET_M_BLOCKS,
        drop_rate: float = 0.2,
        in_chans: int = 3,
        global_pool: str = "avg",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.width = width
        self.in_chans = in_chans
        self.global_pool = _pool_type(global_pool)
        stem = make_divisible(STEM_WIDTH * width, 8)
        self.first_layer = nn.Sequential(
            nn.Conv2d(in_chans, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.Hardswish()
        )
        self.base_block = InvertedResidual(stem, stem, stem, 3, 1, se=False, hswish=True)
        self.blocks, self.feature_info = _stages(blocks, width, stem)
        inp = self.feature_info[-1]["num_chs"]

        def skip(cfg: tuple[float, int, int, int]) -> SkipBlock:
            expansion, kernel, pool, joins = cfg
            out = self.feature_info[joins]["num_chs"]
            return SkipBlock(stem, make_divisible(stem * expansion, 8), out, kernel, pool)

        self.skip1 = skip(SKIP1)
        self.skip2 = skip(SKIP2)

        feat = make_divisible(inp * blocks[-1].expansion, 8)
        self.num_features = feat
        self.conv = nn.Sequential(nn.Conv2d(inp, feat, 1, 1, 0, bias=False), nn.BatchNorm2d(feat), nn.Hardswish())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head_hidden_size = make_divisible(HEAD_WIDTH * width, 8) if width > 1.0 else HEAD_WIDTH
        self.classifier = nn.Sequential(
            nn.Linear(feat, self.head_hidden_size),
            nn.Hardswish(),
            nn.Dropout(drop_rate),
            _linear(self.head_hidden_size, num_classes),
        )
        self._init_weights()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def _init_weights(self) -> None:
        # Reference initialisation: He-style normal for convs (fan-out), N(0, 0.01) for Linear.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                _init_linear(m)

    def _levels(self, x: torch.Tensor, stop: int) -> list[torch.Tensor]:
        """Outputs of feature levels 0..stop, in the reference's order (both skips read the base block first)."""
        x = self.base_block(self.first_layer(x))
        levels = [x]
        joins = [self.skip1(x), self.skip2(x)]
        for i, stage in enumerate(self.blocks):
            if i < stop:
                x = stage(x)
                if i < len(joins):
                    x = x + joins[i]
                levels.append(x)
        return levels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> output of the final 1x1 conv (before pooling): the Bias Loss features."""
        return self.conv(self._levels(x, len(self.blocks))[-1])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features -> logits (or, with ``pre_logits``, the vector the last Linear reads).

        Without global pooling (``global_pool=""``) the head's Linear layers act at every position,
        as 1x1 convs would, and the result keeps its N x C x H x W shape.
        """
        pooled = self.global_pool == "avg"
        x = torch.flatten(self.avgpool(x), 1) if pooled else x.permute(0, 2, 3, 1)
        x = self.classifier[2](self.classifier[1](self.classifier[0](x)))
        if not pre_logits:
            x = self.classifier[3](x)
        return x if pooled else x.permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier[3]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, freshly initialised last Linear for ``num_classes`` (0: none, forward gives pre-logits)."""
        if global_pool is not None:
            self.global_pool = _pool_type(global_pool)
        like = next(self.parameters())
        self.num_classes = num_classes
        self.classifier[3] = _linear(self.head_hidden_size, num_classes, like.device, like.dtype)
        if num_classes:
            _init_linear(self.classifier[3])
        self.classifier[3].train(self.training)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """Parameter groups for timm's layer-wise learning-rate decay: stem and skips, then the stages."""
        return {
            "stem": r"^first_layer|^base_block|^skip",
            "blocks": r"^blocks\.(\d+)" if coarse else r"^blocks\.(\d+)\.(\d+)",
        }

    @torch.jit.ignore
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API: the levels ``indices`` picks (timm's convention: None all, k the last k, or a
        list), and unless ``intermediates_only`` the forward_features output too. There is no norm layer,
        so ``norm`` changes nothing; ``stop_early`` computes only up to the last level asked for."""
        if output_fmt != "NCHW":
            raise ValueError(f"SkipNet's features are NCHW, not {output_fmt}")
        take, last = feature_indices(len(self.feature_info), indices)
        levels = self._levels(x, last if stop_early else len(self.blocks))
        intermediates = [levels[i] for i in take]
        if intermediates_only:
            return intermediates
        return self.conv(levels[-1]), intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the layers the levels ``indices`` do not need (timm's FeatureGetterNet calls this).

        The final conv goes when a level before the last is the deepest kept, or with ``prune_norm``
        (features_only); forward_features then ends at that level. With the head pruned, forward
        returns forward_features' map; ``reset_classifier(n, "avg")`` gives it a new Linear.
        """
        take, last = feature_indices(len(self.feature_info), indices)
        self.blocks = self.blocks[:last]
        if last < 1:
            self.skip1 = nn.Identity()
        if last < 2:
            self.skip2 = nn.Identity()
        if prune_norm or last < len(self.feature_info) - 1:
            self.conv = nn.Identity()
            self.num_features = self.feature_info[last]["num_chs"]
        if prune_head or isinstance(self.conv, nn.Identity):
            self.head_hidden_size = self.num_features
            self.classifier = nn.Sequential(nn.Identity(), nn.Identity(), nn.Identity(), nn.Identity())
            self.reset_classifier(0, "")
        return take


def _stages(blocks: Sequence[BlockConfig], width: float, stem: int) -> tuple[nn.ModuleList, list[dict]]:
    """The stages of the block table, and timm's feature_info: the base block, then each stage's output."""
    stages: list[list[nn.Module]] = [[] for _ in range(max(b.stage for b in blocks))]
    info = [{"num_chs": stem, "reduction": 2, "module": "base_block"}]
    info += [{"num_chs": 0, "reduction": 0, "module": f"blocks.{i}"} for i in range(len(stages))]
    inp, reduction = stem, 2
    for b in blocks:
        out = make_divisible(b.out * width, 8)
        hidden = make_divisible(inp * b.expansion, 8)
        stages[b.stage - 1].append(InvertedResidual(inp, hidden, out, b.kernel, b.stride, b.se, b.hswish))
        reduction *= b.stride
        info[b.stage].update(num_chs=out, reduction=reduction)
        inp = out
    return nn.ModuleList(nn.Sequential(*s) for s in stages), info


def feature_indices(count: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """timm's convention for choosing feature levels: None -> all ``count``, an int k -> the last k, a
    sequence -> those levels (negative ones from the end). Returns (levels, deepest)."""
    if indices is None:
        indices = count
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise ValueError(f"asked for the last {indices} feature levels of {count}")
        take = list(range(count - indices, count))
    else:
        take = [i + count if i < 0 else i for i in indices]
        if not take or not all(0 <= i < count for i in take):
            raise ValueError(f"feature levels {list(indices)} out of range: there are {count}")
    return take, max(take)


def _pool_type(global_pool: str) -> str:
    if global_pool not in ("avg", ""):
        raise ValueError(f"SkipNet pools with 'avg' or not at all (''), not {global_pool!r}")
    return global_pool


def _init_linear(m: nn.Linear) -> None:
    nn.init.normal_(m.weight, 0.0, 0.01)
    nn.init.zeros_(m.bias)


def _linear(features: int, num_classes: int, device=None, dtype=None) -> nn.Module:
    """The last Linear, or nothing for ``num_classes=0`` (timm's headless model)."""
    return nn.Linear(features, num_classes, device=device, dtype=dtype) if num_classes else nn.Identity()


# timm's pretrained_cfg of a SkipNet without a run: ImageNet at 224x224, as the paper trained it and as
# `skipnet-train --data imagefolder --img-size 224` preprocesses (tests/test_hub.py checks the two agree).
# No weights are hosted (url ""): trained weights come from a run directory or a file.
_CFG = {
    "url": "",
    "num_classes": 1000,
    "input_size": (3, 224, 224),
    "pool_size": (7, 7),
    "crop_pct": 0.875,
    "crop_mode": "center",
    "interpolation": "bilinear",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "first_conv": "first_layer.0",
    "classifier": "classifier.3",
    "paper_name": "Bias Loss for Mobile Neural Networks",
    "paper_ids": "arXiv:2107.11170",
}


@register_model(pretrained_cfg=_CFG)
def skipnet_xs(num_classes: int = 1000, **kwargs) -> SkipNet:
    """SkipNet-XS: width 0.5."""
    return SkipNet(num_classes, 0.5, **kwargs)


@register_model(pretrained_cfg=_CFG)
def skipnet_s(num_classes: int = 1000, **kwargs) -> SkipNet:
    """SkipNet-S: width 0.75."""
    return SkipNet(num_classes, 0.75, **kwargs)


@register_model(pretrained_cfg=_CFG)
def skipnet_m(num_classes: int = 1000, **kwargs) -> SkipNet:
    """SkipNet-M: width 1.0, the paper's network."""
    return SkipNet(num_classes, 1.0, **kwargs)


@register_model(pretrained_cfg=_CFG)
def skipnet_l(num_classes: int = 1000, **kwargs) -> SkipNet:
    """SkipNet-L: width 1.25."""
    return SkipNet(num_classes, 1.25, **kwargs)


# timm's register_model looks up an entry point's pretrained_cfg in its module's default_cfgs;
# skipnet.models.hub registers these builders' timm entry points under this module.
default_cfgs = pretrained_cfgs(__name__)
__all__ = ["SkipNet", "make_divisible", "feature_indices", "default_cfgs", *default_cfgs]
