"""A three-conv network for fast tests and examples (any input of at least 4x4)."""

from __future__ import annotations

import torch
from torch import nn

from snacs.models.registry import register_model, scale_channels

__all__ = ["SimpleCNN", "simplecnn"]


class SimpleCNN(nn.Module):
    """conv-BN-ReLU-pool x2, conv-BN-ReLU, global average pool, linear (16/32/64 channels)."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        c1, c2, c3 = (scale_channels(c, width) for c in (16, 32, 64))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1, bias=False),
            nn.BatchNorm2d(c3),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model
def simplecnn(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> SimpleCNN:
    """Tiny CNN for unit tests: 3 convs and 1 linear layer."""
    return SimpleCNN(num_classes=num_classes, width=width, in_channels=in_channels)
