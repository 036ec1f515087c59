"""ImageNet ResNet-50 (v1.5: stride on the 3x3 conv) with torchvision's module names.

Parameter and buffer names equal those of `torchvision.models.resnet50`, so its state_dicts load
with `strict=True`; torchvision itself is not needed.
"""

from __future__ import annotations

import torch
from torch import nn

from snacs.models.registry import register_model, scale_channels

__all__ = ["Bottleneck", "ImageNetResNet", "resnet50"]


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4; projection `downsample` when shapes change."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        out_planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        # One ReLU module used three times, as in torchvision (it has no state).
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ImageNetResNet(nn.Module):
    """Bottleneck ResNet for ImageNet-sized inputs (any size of at least 32x32 runs).

    `width` multiplies every channel count (stem, bottleneck and block outputs); 1.0 is exact.
    """

    def __init__(
        self,
        layers: list[int],
        num_classes: int = 1000,
        width: float = 1.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.inplanes = scale_channels(64, width)
        self.conv1 = nn.Conv2d(in_channels, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0], 1, width)
        self.layer2 = self._make_layer(128, layers[1], 2, width)
        self.layer3 = self._make_layer(256, layers[2], 2, width)
        self.layer4 = self._make_layer(512, layers[3], 2, width)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int, width: float) -> nn.Sequential:
        inner = scale_channels(planes, width)
        out = scale_channels(planes * Bottleneck.expansion, width)
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out),
            )
        layers = [Bottleneck(self.inplanes, inner, out, stride, downsample)]
        self.inplanes = out
        layers += [Bottleneck(out, inner, out) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model
def resnet50(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> ImageNetResNet:
    """ResNet-50 v1.5: 25,557,032 parameters at 1000 classes; torchvision names."""
    return ImageNetResNet(
        [3, 4, 6, 3], num_classes=num_classes, width=width, in_channels=in_channels
    )
