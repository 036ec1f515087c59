"""CIFAR ResNets (He et al. 2016, section 4.2) with the parameter-free option-A shortcut.

Parameter names follow the widely shared CIFAR ResNet checkpoints (conv1, bn1,
layer{1,2,3}.{i}.conv1/bn1/conv2/bn2, linear), so those state_dicts load as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from snacs.models.registry import register_model, scale_channels

__all__ = [
    "PadShortcut",
    "PadShortcutPruner",
    "customized_pruners",
    "BasicBlock",
    "CifarResNet",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
]


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by `stride`, then zero-pad channels to `out_channels`.

    A named module rather than a lambda, so it pickles, prints and traces; it has no parameters
    and adds nothing to the state_dict. Input channel `src[k]` is copied to output channel
    `dst[k]`; at construction the input sits in the middle (`(out - in) // 2` zero channels on
    each side), which is the usual `F.pad(..., (0, 0, 0, 0, planes // 4, planes // 4))`.
    Keeping the map explicit lets `PadShortcutPruner` slim the residual trunks on both sides
    of a stage boundary independently and stay exact.

    The state_dict holds no entry for an unpruned shortcut (so public option-A checkpoints load
    with `strict=True`); once pruned, it holds `index` (src and dst rows) and `channels`
    (in, out), and loading them restores the slimmed map.
    """

    src: torch.Tensor
    dst: torch.Tensor

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2) -> None:
        super().__init__()
        if in_channels > out_channels:
            raise ValueError(f"PadShortcut cannot shrink {in_channels} to {out_channels} channels")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        lo = (out_channels - in_channels) // 2
        # Not persistent: pretrained option-A checkpoints have no shortcut entries.
        self.register_buffer("src", torch.arange(in_channels), persistent=False)
        self.register_buffer("dst", torch.arange(lo, lo + in_channels), persistent=False)
        self._built = (in_channels, out_channels)

    def _is_default(self) -> bool:
        if (self.in_channels, self.out_channels) != self._built:
            return False
        lo = (self.out_channels - self.in_channels) // 2
        full = torch.arange(self.in_channels, device=self.src.device)
        return (
            self.src.numel() == self.in_channels
            and torch.equal(self.src, full)
            and torch.equal(self.dst, full + lo)
        )

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if not self._is_default():
            destination[prefix + "index"] = torch.stack([self.src, self.dst])
            destination[prefix + "channels"] = torch.tensor([self.in_channels, self.out_channels])

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        keys = (prefix + "index", prefix + "channels")
        if all(k in state_dict for k in keys):
            index, channels = (state_dict[k] for k in keys)
            self.in_channels, self.out_channels = (int(c) for c in channels)
            self.src = index[0].to(self.src.device, torch.long).clone()
            self.dst = index[1].to(self.dst.device, torch.long).clone()
        own = {k: v for k, v in state_dict.items() if k.startswith(prefix) and k not in keys}
        super()._load_from_state_dict(
            own, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.src.numel() != self.in_channels:
            x = x.index_select(1, self.src)
        out = x.new_zeros((x.shape[0], self.out_channels, x.shape[2], x.shape[3]))
        return out.index_copy(1, self.dst, x)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class PadShortcutPruner(tp.pruner.function.BasePruningFunc):
    """torch-pruning handler for `PadShortcut`: its input and output channels prune separately.

    Without it, torch-pruning treats the padding as element-wise and merges the residual
    trunks of all three stages (16, 32 and 64 channels) into one group, which cannot be slimmed.
    Pass `customized_pruners()` to `DependencyGraph.build_dependency` or a torch-pruning pruner.
    """

    TARGET_MODULES = (PadShortcut,)

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        assert isinstance(layer, PadShortcut)
        removed = torch.as_tensor(sorted(idxs), dtype=torch.long, device=layer.dst.device)
        keep = ~torch.isin(layer.dst, removed)
        # New position of an output channel = old position minus removed channels before it.
        shift = torch.searchsorted(removed, layer.dst[keep])
        layer.src, layer.dst = layer.src[keep], layer.dst[keep] - shift
        layer.out_channels -= len(removed)
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        assert isinstance(layer, PadShortcut)
        removed = torch.as_tensor(sorted(idxs), dtype=torch.long, device=layer.src.device)
        keep = ~torch.isin(layer.src, removed)
        shift = torch.searchsorted(removed, layer.src[keep])
        layer.src, layer.dst = layer.src[keep] - shift, layer.dst[keep]
        layer.in_channels -= len(removed)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return int(layer.out_channels)

    def get_in_channels(self, layer: nn.Module) -> int:
        return int(layer.in_channels)


def customized_pruners() -> dict[type, tp.pruner.function.BasePruningFunc]:
    """torch-pruning handlers for the zoo's custom layers, for `customized_pruners=`."""
    return {PadShortcut: PadShortcutPruner()}


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus the identity or option-A shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 16/32/64 channels (x width), global average pool, linear."""

    def __init__(
        self,
        num_blocks: int,
        num_classes: int = 10,
        width: float = 1.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        c1, c2, c3 = (scale_channels(c, width) for c in (16, 32, 64))
        self.conv1 = nn.Conv2d(in_channels, c1, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(c1, c1, num_blocks, stride=1)
        self.layer2 = self._make_layer(c1, c2, num_blocks, stride=2)
        self.layer3 = self._make_layer(c2, c3, num_blocks, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(c3, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _make_layer(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(self.avgpool(x), 1))


@register_model
def resnet20(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-20 (3 blocks per stage)."""
    return CifarResNet(3, num_classes, width, in_channels)


@register_model
def resnet32(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-32 (5 blocks per stage)."""
    return CifarResNet(5, num_classes, width, in_channels)


@register_model
def resnet44(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-44 (7 blocks per stage)."""
    return CifarResNet(7, num_classes, width, in_channels)


@register_model
def resnet56(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-56 (9 blocks per stage): 855,770 parameters, 125.5 M MACs at 10 classes."""
    return CifarResNet(9, num_classes, width, in_channels)


@register_model
def resnet110(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-110 (18 blocks per stage)."""
    return CifarResNet(18, num_classes, width, in_channels)
