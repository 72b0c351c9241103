"""torchvision baselines behind the SkipNet interface (forward_features / forward_head / feature_layer).

The torchvision network is kept whole under ``net`` so its own implementation runs
unchanged; the wrapper only names where the Bias Loss features come from
(the layer the paper's reference code uses for each family).
"""

from __future__ import annotations

import torch
import torchvision.models as tvm
from torch import nn
from torch.nn import functional as F

from .registry import register_model


class Baseline(nn.Module):
    input_multiple = 32

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class MobileNetV3(Baseline):
    # features[-1] is the last 1x1 conv + BN + h-swish, the same place as SkipNet's `conv`.
    feature_layer = "net.features"

    def __init__(self, net: nn.Module):
        super().__init__(net)
        # torchvision keeps TensorFlow's BatchNorm momentum (0.01): its running statistics then lag
        # so far behind the weights in a short training that evaluation falls to chance (measured:
        # 82% train vs 10-50% test top-1 after 3 epochs of 20,000 Fashion-MNIST images). SkipNet and
        # the other baselines use PyTorch's 0.1; the same here, so both are trained the same way.
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1

    def forward_features(self, x):
        return self.net.features(x)

    def forward_head(self, f):
        return self.net.classifier(torch.flatten(self.net.avgpool(f), 1))


class ResNet(Baseline):
    feature_layer = "net.layer4"

    def forward_features(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))

    def forward_head(self, f):
        return self.net.fc(torch.flatten(self.net.avgpool(f), 1))


class ShuffleNetV2(Baseline):
    # conv5 includes BN + ReLU, as in the reference.
    feature_layer = "net.conv5"

    def forward_features(self, x):
        n = self.net
        return n.conv5(n.stage4(n.stage3(n.stage2(n.maxpool(n.conv1(x))))))

    def forward_head(self, f):
        return self.net.fc(f.mean([2, 3]))


class DenseNet(Baseline):
    # torchvision applies the final ReLU functionally; a module here lets a hook see the features.
    feature_layer = "feature_act"

    def __init__(self, net: nn.Module):
        super().__init__(net)
        self.feature_act = nn.ReLU(inplace=False)

    def forward_features(self, x):
        return self.feature_act(self.net.features(x))

    def forward_head(self, f):
        return self.net.classifier(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1))


# weights=None: nothing may be downloaded at run time; pretrained weights come via create_model(weights=...).
# Registered without a pretrained_cfg: these are torchvision's networks, whose names timm already uses.


@register_model()
def mobilenet_v3_small(num_classes: int = 1000, **kwargs) -> Baseline:
    return MobileNetV3(tvm.mobilenet_v3_small(weights=None, num_classes=num_classes, **kwargs))


@register_model()
def mobilenet_v3_large(num_classes: int = 1000, **kwargs) -> Baseline:
    return MobileNetV3(tvm.mobilenet_v3_large(weights=None, num_classes=num_classes, **kwargs))


@register_model()
def resnet18(num_classes: int = 1000, **kwargs) -> Baseline:
    return ResNet(tvm.resnet18(weights=None, num_classes=num_classes, **kwargs))


@register_model()
def shufflenet_v2_x0_5(num_classes: int = 1000, **kwargs) -> Baseline:
    return ShuffleNetV2(tvm.shufflenet_v2_x0_5(weights=None, num_classes=num_classes, **kwargs))


@register_model()
def densenet121(num_classes: int = 1000, **kwargs) -> Baseline:
    return DenseNet(tvm.densenet121(weights=None, num_classes=num_classes, **kwargs))
