"""A deterministic generated dataset of class-dependent patterns, for tests and tiny configs.

Each class has a prototype: an oriented sinusoidal grating (orientation and frequency depend on
the class) blended with a smooth random colour field. A sample is its class prototype, shifted by
up to two pixels, with a random brightness offset and pixel noise. A small CNN separates the
classes within an epoch or two, yet the task is not solvable from a single pixel.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from snacs.data.base import TensorImageDataset
from snacs.errors import ConfigError

__all__ = ["synthetic"]

_SPLIT_STREAM = {"train": 1, "test": 2}
_MAX_SHIFT = 2


def _prototypes(num_classes: int, shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """K×C×H×W class prototypes in [0, 1]; independent of the split."""
    c, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(num_classes, c, 4, 4, generator=gen)
    field = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    k = torch.arange(num_classes, dtype=torch.float32)
    theta = math.pi * k / num_classes
    freq = 1.5 + (k % 3)
    yy = torch.linspace(0, 1, h).view(1, h, 1)
    xx = torch.linspace(0, 1, w).view(1, 1, w)
    phase = xx * torch.cos(theta).view(-1, 1, 1) + yy * torch.sin(theta).view(-1, 1, 1)
    grating = 0.5 + 0.5 * torch.sin(2 * math.pi * freq.view(-1, 1, 1) * phase)  # K×H×W
    return 0.5 * grating.unsqueeze(1) + 0.5 * field


def _generate(
    split: str, num_classes: int, n_per_class: int, shape: tuple[int, int, int], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    c, h, w = shape
    n = num_classes * n_per_class
    protos = _prototypes(num_classes, shape, seed)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + _SPLIT_STREAM[split])
    labels = torch.arange(n) % num_classes  # interleaved: any prefix is nearly balanced
    dy = torch.randint(-_MAX_SHIFT, _MAX_SHIFT + 1, (n,), generator=gen)
    dx = torch.randint(-_MAX_SHIFT, _MAX_SHIFT + 1, (n,), generator=gen)
    rows = (torch.arange(h).view(1, h) - dy.view(n, 1)) % h  # circular shift by (dy, dx)
    cols = (torch.arange(w).view(1, w) - dx.view(n, 1)) % w
    x = protos[
        labels.view(n, 1, 1, 1),
        torch.arange(c).view(1, c, 1, 1),
        rows.view(n, 1, h, 1),
        cols.view(n, 1, 1, w),
    ]
    brightness = 0.15 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    x = x + brightness + 0.12 * torch.randn(n, c, h, w, generator=gen)
    images = (x.clamp_(0, 1) * 255).round_().to(torch.uint8)
    return images, labels


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images.double().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1, correction=0).tolist())


@functools.lru_cache(maxsize=16)
def _train_stats(
    num_classes: int, n_per_class: int, shape: tuple[int, int, int], seed: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return _channel_stats(_generate("train", num_classes, n_per_class, shape, seed)[0])


def synthetic(
    split: str = "train",
    num_classes: int = 10,
    n_per_class: int = 100,
    shape: tuple[int, int, int] = (3, 32, 32),
    seed: int = 0,
) -> TensorImageDataset:
    """Generate the synthetic pattern dataset.

    Args:
        split: ``"train"`` or ``"test"``; both share the class prototypes, not the samples.
        num_classes: number of classes K.
        n_per_class: samples per class; labels cycle 0..K-1 so the classes are balanced.
        shape: (C, H, W).
        seed: the same seed gives the same images, bit for bit.

    Returns:
        A dataset normalised with the per-channel statistics of its train split.
    """
    if split not in _SPLIT_STREAM:
        raise ConfigError(f"synthetic split must be 'train' or 'test', got {split!r}")
    if num_classes < 1 or n_per_class < 1:
        raise ConfigError(
            f"num_classes and n_per_class must be positive, got {num_classes}, {n_per_class}"
        )
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"shape must be (C, H, W) with positive sizes, got {shape}")
    images, labels = _generate(split, num_classes, n_per_class, shape, seed)
    if split == "train":
        mean, std = _channel_stats(images)
    else:
        mean, std = _train_stats(num_classes, n_per_class, shape, seed)
    return TensorImageDataset(
        images,
        labels,
        [f"class{k}" for k in range(num_classes)],
        mean,
        std,
        name="synthetic",
        split=split,
    )
