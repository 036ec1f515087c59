"""In-memory image datasets and the normalisation they share.

Small datasets are held as one uint8 tensor (N×C×H×W) so a batch is one indexing operation and
one fused multiply-add, never a Python call per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch.utils.data import Dataset

from snacs.errors import DataError

__all__ = ["ImageDataset", "TensorImageDataset", "normalize_uint8"]


@runtime_checkable
class ImageDataset(Protocol):
    """What every snacs dataset offers: labelled images, class names and channel statistics.

    ``mean`` and ``std`` are per channel in [0, 1] units; ``dataset[i]`` is a normalised float32
    C×H×W tensor and an int label.
    """

    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    @property
    def num_classes(self) -> int: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]: ...


def _affine(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and shift (C×1×1) such that ``u8 * scale + shift == (u8 / 255 - mean) / std``."""
    m = torch.tensor(mean, dtype=torch.float64).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(-1, 1, 1)
    return (1.0 / (255.0 * s)).float(), (-m / s).float()


def normalize_uint8(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Convert uint8 images (…×C×H×W) to normalised float32: ``(x / 255 - mean) / std``."""
    scale, shift = _affine(mean, std)
    return images.float().mul_(scale).add_(shift)


def check_stats(
    mean: Sequence[float], std: Sequence[float], channels: int, name: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Validate per-channel mean/std and return them as float tuples."""
    mean_t = tuple(float(v) for v in mean)
    std_t = tuple(float(v) for v in std)
    if len(mean_t) != channels or len(std_t) != channels:
        raise DataError(
            f"{name}: mean/std have {len(mean_t)}/{len(std_t)} entries but the images have "
            f"{channels} channels; give one value per channel"
        )
    if min(std_t) <= 0:
        raise DataError(f"{name}: every channel std must be positive, got {std_t}")
    return mean_t, std_t


class TensorImageDataset(Dataset):
    """Images held in memory as uint8, normalised on access.

    Args:
        images: uint8 tensor, N×C×H×W. It may be a broadcast view (e.g. a grey channel repeated
            to three); treat it as read-only.
        labels: int64 tensor of length N with values in ``[0, len(classes))``.
        classes: class names, index = label.
        mean: per-channel mean in [0, 1] units, used for normalisation.
        std: per-channel standard deviation in [0, 1] units.
        name: dataset name, e.g. ``"cifar10"``.
        split: split name, e.g. ``"train"``, for reports and cache keys.
        preprocessing: how the images were produced (resizing, cropping, splitting), recorded in
            result files; the normalisation is added to it as ``mean``/``std``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        name: str = "tensor",
        split: str | None = None,
        preprocessing: dict | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(
                f"{name}: images must be a uint8 N×C×H×W tensor, got {images.dtype} "
                f"with shape {tuple(images.shape)}"
            )
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.dim() != 1 or labels.numel() != images.shape[0]:
            raise DataError(
                f"{name}: {images.shape[0]} images but {labels.numel()} labels; the image and "
                "label files do not belong together"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise DataError(
                f"{name}: labels span [{int(labels.min())}, {int(labels.max())}] but there are "
                f"{len(classes)} classes"
            )
        self.images = images
        self.labels = labels
        self.classes = list(classes)
        self.mean, self.std = check_stats(mean, std, images.shape[1], name)
        self.name = name
        self.split = split
        self.preprocessing = dict(preprocessing or {}) | {"mean": list(self.mean),
                                                           "std": list(self.std)}
        self._scale, self._shift = _affine(self.mean, self.std)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        """Number of classes (including any with no samples in this split)."""
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.normalize(self.images[index]), int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"TensorImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"image_shape={self.image_shape}, num_classes={self.num_classes})"
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise uint8 images (…×C×H×W) of this dataset to float32."""
        return images.float().mul_(self._scale).add_(self._shift)

    def get_batch(self, indices: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images and labels at ``indices``, gathered in one indexing operation."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.normalize(self.images[idx]), self.labels[idx]

    def subset(self, indices: torch.Tensor | Sequence[int]) -> TensorImageDataset:
        """A new dataset holding only ``indices`` (same classes and statistics)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return TensorImageDataset(
            self.images[idx],
            self.labels[idx],
            self.classes,
            self.mean,
            self.std,
            name=self.name,
            split=self.split,
            preprocessing=self.preprocessing,
        )
