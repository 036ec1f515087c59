"""CIFAR MobileNetV2 (Sandler et al. 2018) in the layout of kuangliu/pytorch-cifar.

The stem conv has stride 1 and the first two stride-2 stages of the ImageNet network have
stride 1, so a 32x32 input reaches the last conv at 4x4.
"""

from __future__ import annotations

import torch
from torch import nn

from snacs.models.registry import register_model, scale_channels

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenetv2", "MOBILENETV2_CFG"]

# (expansion, out_planes, num_blocks, stride of the first block)
MOBILENETV2_CFG: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 in the ImageNet network
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear projection; identity added when shapes match.

    The expand conv is kept even at expansion 1, as in the kuangliu CIFAR variant.
    """

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = expansion * in_planes
        self.use_residual = stride == 1 and in_planes == out_planes
        self.conv1 = nn.Conv2d(in_planes, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False
        )
        self.bn2 = nn.BatchNorm2d(hidden)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(hidden, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + x if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 for 32x32 inputs; `width` scales every layer's channels, including the 1280."""

    def __init__(
        self,
        num_classes: int = 10,
        width: float = 1.0,
        in_channels: int = 3,
        cfg: list[tuple[int, int, int, int]] | None = None,
    ) -> None:
        super().__init__()
        stem = scale_channels(32, width)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu1 = nn.ReLU(inplace=True)
        blocks: list[nn.Module] = []
        in_planes = stem
        for expansion, out, num_blocks, stride in cfg or MOBILENETV2_CFG:
            out = scale_channels(out, width)
            for i in range(num_blocks):
                blocks.append(InvertedResidual(in_planes, out, expansion, stride if i == 0 else 1))
                in_planes = out
        self.layers = nn.Sequential(*blocks)
        last = scale_channels(1280, width)
        self.conv2 = nn.Conv2d(in_planes, last, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last)
        self.relu2 = nn.ReLU(inplace=True)
        # Global pooling equals kuangliu's avg_pool2d(4) at 32x32 and also accepts other sizes.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(last, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.linear(torch.flatten(self.avgpool(x), 1))


@register_model
def mobilenetv2(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> MobileNetV2:
    """CIFAR MobileNetV2 (kuangliu strides), ReLU activations."""
    return MobileNetV2(num_classes=num_classes, width=width, in_channels=in_channels)
