"""Small networks, one per structure that pruning tools trip over (written for snacs).

Each class is a whole tiny classifier (3-channel input, 10 classes, widths of a few channels) built
around one structure: channel concatenation (Inception, dense block, DLA-style aggregation),
grouped convolutions (ResNeXt), squeeze-and-excitation gating, channel shuffle, channel split,
an EfficientNet-style MBConv with SE, a depthwise-separable stack with an MLP head, and `Mixed`,
which chains all of them. `tests/test_zoo.py` prunes every one of them with snacs and
`benchmarks/zoo.py` compares snacs with torch-pruning's MagnitudePruner on the same blocks.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BLOCKS", "Mixed", "build"]


def cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class Head(nn.Module):
    """Global average pooling, Flatten and a linear classifier."""

    def __init__(self, cin: int, num_classes: int = 10) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(self.pool(x)))


# --------------------------------------------------------------------------- structures

class InceptionBlock(nn.Module):
    """Four branches (1x1; 1x1-3x3; 1x1-5x5; pool-1x1) concatenated along channels."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        self.b1 = cbr(cin, c1, 1)
        self.b2 = nn.Sequential(cbr(cin, c3r, 1), cbr(c3r, c3, 3))
        self.b3 = nn.Sequential(cbr(cin, c5r, 1), cbr(c5r, c5, 5))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), cbr(cin, cp, 1))
        self.out_channels = c1 + c3 + c5 + cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class DenseLayer(nn.Module):
    """BN-ReLU-conv on the concatenation so far; returns it with the new channels appended."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(torch.relu(self.bn(x)))], 1)


class ResNeXtBlock(nn.Module):
    """1x1 reduce, 3x3 grouped conv (cardinality `groups`), 1x1 expand, identity shortcut."""

    def __init__(self, c: int, width: int, groups: int) -> None:
        super().__init__()
        self.reduce = cbr(c, width, 1)
        self.grouped = cbr(width, width, 3, groups=groups)
        self.expand = nn.Conv2d(width, c, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn(self.expand(self.grouped(self.reduce(x)))))


class SqueezeExcite(nn.Module):
    """x * sigmoid(W2 relu(W1 mean(x))): channel gating."""

    def __init__(self, c: int, r: int, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, r, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(r, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(self.pool(x)))))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: chunk in two, transform one half (1x1, depthwise 3x3, 1x1), concatenate,
    shuffle the channels."""

    def __init__(self, c: int) -> None:
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(cbr(h, h, 1),
                                    nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False),
                                    nn.BatchNorm2d(h), cbr(h, h, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([a, self.branch(b)], 1), 2)


class MBConvSE(nn.Module):
    """EfficientNet's MBConv: 1x1 expand, depthwise 3x3, squeeze-and-excitation, 1x1 project,
    identity shortcut; SiLU activations. As in common CIFAR EfficientNet code, the expand conv is
    built even with expansion 1, where forward skips it (a layer that never runs)."""

    def __init__(self, c: int, expand: int, se: int) -> None:
        super().__init__()
        e = c * expand
        self.ratio = expand
        self.expand = nn.Sequential(nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False),
                                nn.BatchNorm2d(e), nn.SiLU())
        self.se = SqueezeExcite(e, se, act=nn.SiLU)
        self.project = nn.Sequential(nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.ratio == 1 else self.expand(x)
        return x + self.project(self.se(self.dw(h)))


class DLARoot(nn.Module):
    """DLA-style aggregation: two stacked convs, their outputs (and the input) concatenated and
    fused by a 1x1 root conv."""

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.left = cbr(cin, c)
        self.right = cbr(c, c)
        self.root = cbr(cin + 2 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.left(x)
        b = self.right(a)
        return self.root(torch.cat([a, b, x], 1))


# --------------------------------------------------------------------------- tiny networks

class InceptionNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.inc = InceptionBlock(8, 4, 4, 6, 2, 4, 4)
        self.post = cbr(self.inc.out_channels, 8, 1)
        self.head = Head(8, num_classes)

    def forward(self, x):
        return self.head(self.post(self.inc(self.stem(x))))


class DenseNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.dense = nn.Sequential(DenseLayer(8, 4), DenseLayer(12, 4), DenseLayer(16, 4))
        self.bn = nn.BatchNorm2d(20)
        self.trans = nn.Conv2d(20, 10, 1, bias=False)
        self.head = Head(10, num_classes)

    def forward(self, x):
        return self.head(self.trans(torch.relu(self.bn(self.dense(self.stem(x))))))


class ResNeXtNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.block = ResNeXtBlock(8, 16, groups=4)
        self.head = Head(8, num_classes)

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


class SENet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.conv = cbr(8, 16)
        self.se = SqueezeExcite(16, 4)
        self.post = cbr(16, 8)
        self.head = Head(8, num_classes)

    def forward(self, x):
        return self.head(self.post(self.se(self.conv(self.stem(x)))))


class ShuffleNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.unit = ShuffleUnit(8)
        self.post = cbr(8, 8, 1)
        self.head = Head(8, num_classes)

    def forward(self, x):
        return self.head(self.post(self.unit(self.stem(x))))


class SplitNet(nn.Module):
    """torch.split of one conv's channels into two branches that are concatenated again."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.left = cbr(4, 6)
        self.right = cbr(4, 6)
        self.post = cbr(12, 8, 1)
        self.head = Head(8, num_classes)

    def forward(self, x):
        a, b = torch.split(self.stem(x), [4, 4], dim=1)
        return self.head(self.post(torch.cat([self.left(a), self.right(b)], 1)))


class EfficientNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.SiLU())
        self.layers = nn.Sequential(MBConvSE(8, 1, 4), MBConvSE(8, 2, 4))
        self.post = nn.Sequential(nn.Conv2d(8, 12, 1, bias=False), nn.BatchNorm2d(12), nn.SiLU())
        self.head = Head(12, num_classes)

    def forward(self, x):
        return self.head(self.post(self.layers(self.stem(x))))


class DLANet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = cbr(3, 6)
        self.tree = DLARoot(6, 8)
        self.head = Head(8, num_classes)

    def forward(self, x):
        return self.head(self.tree(self.stem(x)))


class DWSeparableMLP(nn.Module):
    """MobileNet-style depthwise-separable stack, an nn.Identity, then global pooling, Flatten
    and three linear layers."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.dw1 = cbr(8, 8, 3, groups=8)
        self.pw1 = cbr(8, 12, 1)
        self.dw2 = cbr(12, 12, 3, stride=2, groups=12)
        self.pw2 = cbr(12, 16, 1)
        self.ident = nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10),
                                 nn.ReLU(), nn.Linear(10, num_classes))

    def forward(self, x):
        x = self.pw2(self.dw2(self.pw1(self.dw1(self.stem(x)))))
        return self.mlp(self.pool(self.ident(x)))


class Mixed(nn.Module):
    """Every structure above in one network."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.inc = InceptionBlock(8, 2, 2, 4, 2, 2, 2)          # 10 channels
        self.reduce = cbr(10, 8, 1)
        self.dense = nn.Sequential(DenseLayer(8, 4), DenseLayer(12, 4))  # 16
        self.trans = cbr(16, 8, 1)
        self.resnext = ResNeXtBlock(8, 8, groups=2)
        self.se = SqueezeExcite(8, 2)
        self.shuffle = ShuffleUnit(8)
        self.mb = MBConvSE(8, 2, 2)
        self.split_l = cbr(4, 4)
        self.split_r = cbr(4, 4)
        self.dla = DLARoot(8, 6)
        self.dw = cbr(6, 6, 3, groups=6)
        self.pw = cbr(6, 10, 1)
        self.ident = nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(10, 8), nn.ReLU(),
                                 nn.Linear(8, num_classes))

    def forward(self, x):
        x = self.trans(self.dense(self.reduce(self.inc(self.stem(x)))))
        x = self.mb(self.shuffle(self.se(self.resnext(x))))
        a, b = torch.split(x, [4, 4], dim=1)
        x = self.dla(torch.cat([self.split_l(a), self.split_r(b)], 1))
        return self.mlp(self.pool(self.ident(self.pw(self.dw(x)))))


BLOCKS: dict[str, type[nn.Module]] = {
    "inception": InceptionNet,
    "dense": DenseNet,
    "resnext": ResNeXtNet,
    "se": SENet,
    "shuffle": ShuffleNet,
    "split": SplitNet,
    "mbconv_se": EfficientNet,
    "dla": DLANet,
    "dwsep_mlp": DWSeparableMLP,
    "mixed": Mixed,
}


def build(name: str, seed: int = 0) -> nn.Module:
    """One of BLOCKS with seeded random weights and non-trivial BN statistics, in eval mode."""
    torch.manual_seed(seed)
    model = BLOCKS[name]()
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.running_mean.uniform_(-0.1, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    return model.eval()
