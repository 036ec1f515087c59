"""Image folders (``root/<split>/<class>/*.png|jpg|jpeg``), decoded lazily with Pillow."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from snacs.data.base import TensorImageDataset, _affine, check_stats
from snacs.errors import ConfigError, DataError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "image_folder",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Resize-then-crop ratio of the usual ImageNet evaluation transform (256 -> 224).
_CROP_RATIO = 224 / 256


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _subdirs(path: Path) -> list[Path]:
    """Visible subdirectories (``.ipynb_checkpoints`` and the like are not classes)."""
    return [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]


class ImageFolderDataset(Dataset):
    """Images in ``root/<split>/<class>/``, read and resized on access.

    Either ``size`` (resize straight to that size) or the resize-and-centre-crop transform:
    shorter side to ``resize`` then a ``crop``×``crop`` centre crop. Defaults: ``crop=224``,
    ``resize=round(crop / 0.875)`` (256 for 224).

    Args:
        root: dataset directory.
        split: subdirectory, e.g. ``"train"`` or ``"val"``.
        crop: side of the centre crop.
        resize: shorter side before cropping.
        size: exact output size ``(h, w)`` or an int for a square; excludes ``crop``/``resize``.
        mean: per-channel mean in [0, 1] units; default ImageNet's.
        std: per-channel std in [0, 1] units; default ImageNet's.
        classes: class names to use (subdirectories); default all, sorted.

    Raises:
        DataError: missing directory, no classes or no images.
        ConfigError: inconsistent size options.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        crop: int | None = None,
        resize: int | None = None,
        size: int | Sequence[int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        classes: Sequence[str] | None = None,
    ) -> None:
        if size is not None and (crop is not None or resize is not None):
            raise ConfigError("give either size, or crop/resize, not both")
        if size is not None:
            self._size: tuple[int, int] | None = _pair(size)
            self._crop, self._resize = None, None
            out = self._size
        else:
            self._size = None
            self._crop = int(crop) if crop is not None else 224
            self._resize = int(resize) if resize is not None else round(self._crop / _CROP_RATIO)
            if self._resize < self._crop:
                raise ConfigError(f"resize ({self._resize}) must be at least crop ({self._crop})")
            out = (self._crop, self._crop)
        if min(out) <= 0:
            raise ConfigError(f"image size must be positive, got {out}")
        self._out = out

        self.root = Path(root).expanduser()
        self.split = split
        folder = self.root / split
        if not folder.is_dir():
            raise DataError(
                f"image folder {folder} does not exist. Fix: pass --data-root pointing at a "
                f"directory laid out as <root>/{split}/<class>/*.png|jpg|jpeg"
            )
        # Class names come from every split so labels agree between, e.g., train and val even
        # when one split lacks a class.
        names = sorted({c.name for s in _subdirs(self.root) for c in _subdirs(s)})
        if classes is not None:
            unknown = sorted(set(classes) - set(names))
            if unknown:
                raise DataError(f"classes {unknown} have no directory in {self.root}/<split>/")
            names = list(classes)
        if not names:
            raise DataError(f"{folder} has no class subdirectories (<class>/*.png|jpg|jpeg)")
        paths: list[Path] = []
        labels: list[int] = []
        for k, name in enumerate(names):
            cdir = folder / name
            files = sorted(
                p
                for p in (cdir.iterdir() if cdir.is_dir() else ())
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not files:
                logger.warning("class %r has no images in %s", name, folder / name)
            paths += files
            labels += [k] * len(files)
        if not paths:
            raise DataError(f"no .png/.jpg/.jpeg images under {folder}/<class>/")
        self.paths = paths
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.classes = names
        self.mean, self.std = check_stats(mean, std, 3, "image-folder")
        self.name = "image-folder"
        self._scale, self._shift = _affine(self.mean, self.std)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image after the transform."""
        return 3, self._out[0], self._out[1]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.normalize(self.load_uint8(index)), int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, "
            f"image_shape={self.image_shape}, num_classes={self.num_classes})"
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise uint8 images (…×3×H×W) to float32."""
        return images.float().mul_(self._scale).add_(self._shift)

    def load_uint8(self, index: int) -> torch.Tensor:
        """Decode, convert to RGB and transform image ``index``; uint8 3×H×W."""
        from PIL import Image, UnidentifiedImageError

        path = self.paths[index]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                if self._size is not None:
                    img = img.resize((self._size[1], self._size[0]), Image.Resampling.BILINEAR)
                else:
                    img = self._resize_crop(img)
                arr = np.asarray(img, dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot read image {path}: {exc}; remove or replace it") from exc
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def _resize_crop(self, img: PILImage) -> PILImage:
        from PIL import Image

        w, h = img.size
        short = self._resize
        assert short is not None and self._crop is not None
        if w <= h:
            nw, nh = short, max(short, round(h * short / w))
        else:
            nw, nh = max(short, round(w * short / h)), short
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        c = self._crop
        left, top = (nw - c) // 2, (nh - c) // 2
        return img.crop((left, top, left + c, top + c))

    def to_memory(self) -> TensorImageDataset:
        """Decode every image into a :class:`TensorImageDataset` (for small folders)."""
        images = torch.empty((len(self), *self.image_shape), dtype=torch.uint8)
        for i in range(len(self)):  # decoding is per file by nature
            images[i] = self.load_uint8(i)
        return TensorImageDataset(
            images,
            self.labels.clone(),
            self.classes,
            self.mean,
            self.std,
            name=self.name,
            split=self.split,
        )


def image_folder(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    *,
    crop: int | None = None,
    resize: int | None = None,
    size: int | Sequence[int] | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    in_memory: bool = False,
) -> ImageFolderDataset | TensorImageDataset:
    """Open ``root/<split>/<class>/*`` as a dataset; see :class:`ImageFolderDataset`.

    Args:
        split: subdirectory of ``root``.
        root: dataset directory (required).
        crop: centre-crop side (default 224 unless ``size`` is given).
        resize: shorter side before cropping (default ``round(crop / 0.875)``).
        size: resize straight to this size instead of resize-and-crop.
        mean: per-channel mean, default ImageNet's.
        std: per-channel std, default ImageNet's.
        in_memory: decode everything now and return a :class:`TensorImageDataset`.
    """
    if root is None:
        raise ConfigError(
            "the image-folder dataset needs a root directory: pass --data-root "
            "(root=... in Python) laid out as <root>/<split>/<class>/*.png|jpg|jpeg"
        )
    ds = ImageFolderDataset(root, split, crop=crop, resize=resize, size=size, mean=mean, std=std)
    return ds.to_memory() if in_memory else ds
