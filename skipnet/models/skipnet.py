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

from __future__ import annotations

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
    """SkipNet at a given width multiplier; ``SkipNet(width=1.0)`` is SkipNet-M."""

    # Module path of the Bias Loss features, for FeatureTap.
    feature_layer = "conv"
    # Input side must be a multiple of this (total stride; the skip pools use kernel = stride).
    input_multiple = 32

    def __init__(
        self,
        num_classes: int = 1000,
        width: float = 1.0,
        blocks: Sequence[BlockConfig] = SKIPNET_M_BLOCKS,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.width = width
        stem = make_divisible(STEM_WIDTH * width, 8)
        self.first_layer = nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.Hardswish())
        self.base_block = InvertedResidual(stem, stem, stem, 3, 1, se=False, hswish=True)

        stages: list[list[nn.Module]] = [[] for _ in range(max(b.stage for b in blocks))]
        stage_out: list[int] = [0] * len(stages)
        inp = stem
        for b in blocks:
            out = make_divisible(b.out * width, 8)
            hidden = make_divisible(inp * b.expansion, 8)
            stages[b.stage - 1].append(InvertedResidual(inp, hidden, out, b.kernel, b.stride, b.se, b.hswish))
            stage_out[b.stage - 1] = out
            inp = out
        self.blocks = nn.ModuleList(nn.Sequential(*s) for s in stages)

        def skip(cfg: tuple[float, int, int, int]) -> SkipBlock:
            expansion, kernel, pool, joins = cfg
            return SkipBlock(stem, make_divisible(stem * expansion, 8), stage_out[joins - 1], kernel, pool)

        self.skip1 = skip(SKIP1)
        self.skip2 = skip(SKIP2)

        feat = make_divisible(inp * blocks[-1].expansion, 8)
        self.num_features = feat
        self.conv = nn.Sequential(nn.Conv2d(inp, feat, 1, 1, 0, bias=False), nn.BatchNorm2d(feat), nn.Hardswish())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        head = make_divisible(HEAD_WIDTH * width, 8) if width > 1.0 else HEAD_WIDTH
        self.classifier = nn.Sequential(
            nn.Linear(feat, head), nn.Hardswish(), nn.Dropout(dropout), nn.Linear(head, num_classes)
        )
        self._init_weights()

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
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> output of the final 1x1 conv (before pooling): the Bias Loss features."""
        x = self.base_block(self.first_layer(x))
        s1, s2 = self.skip1(x), self.skip2(x)
        x = self.blocks[0](x) + s1
        x = self.blocks[1](x) + s2
        x = self.blocks[2](x)
        x = self.blocks[3](x)
        return self.conv(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(features), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# timm's pretrained_cfg of a SkipNet without a run: ImageNet at 224x224, as the paper trained it and as
# `skipnet-train --data imagefolder --img-size 224` preprocesses. No weights are hosted (url ""):
# trained weights come from a run directory or a file.
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
__all__ = ["SkipNet", "make_divisible", "default_cfgs", *default_cfgs]
