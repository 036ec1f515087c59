"""Small custom networks shared by the tests (defined here, known to no snacs registry)."""

from __future__ import annotations

import torch
from torch import nn


class TinyResidual(nn.Module):
    """A custom residual network with a flatten into a Linear (2 x 2 positions per channel)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.a = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bna = nn.BatchNorm2d(8)
        self.b = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bnb = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(8 * 4, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.bna(self.a(x)))
        x = torch.relu(x + self.bnb(self.b(y)))
        return self.fc2(torch.relu(self.fc1(self.pool(x).flatten(1))))
