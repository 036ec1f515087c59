"""CIFAR VGG16 with batch norm, as used by MINT and SNACS (32x32 inputs)."""

from __future__ import annotations

import torch
from torch import nn

from snacs.models.registry import register_model, scale_channels

__all__ = ["VGG", "vgg16", "VGG16_CFG"]

# Numbers are 3x3 conv output channels, "M" a 2x2 max pool.
VGG16_CFG: list[int | str] = [
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
]  # fmt: skip


class VGG(nn.Module):
    """VGG with BN for 32x32 inputs: conv stack, then Linear-BN1d-ReLU-Linear.

    The five max pools reduce 32x32 to 1x1, so the classifier sees the last conv's channels.
    """

    def __init__(
        self,
        cfg: list[int | str],
        num_classes: int = 10,
        width: float = 1.0,
        in_channels: int = 3,
        hidden: int = 512,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                out = scale_channels(int(v), width)
                layers += [
                    nn.Conv2d(channels, out, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
                channels = out
        self.features = nn.Sequential(*layers)
        hidden = scale_channels(hidden, width)
        self.classifier = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))


@register_model
def vgg16(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> VGG:
    """CIFAR VGG16-BN: 13 convs and 2 linear layers, 14,977,728 conv+linear weights at width 1."""
    return VGG(VGG16_CFG, num_classes=num_classes, width=width, in_channels=in_channels)
