"""Image folders as people have them, decoded lazily with Pillow.

Layouts: ``root/<split>/<class>/*`` (``val`` and ``test`` stand in for each other when only one
exists), or ``root/<class>/*`` with no split folders, which is split into train and test by a
seeded, class-stratified draw. Grey, palette, RGBA, CMYK and 16-bit images are converted to 8-bit
RGB. Images that already have the output size are never resized or cropped, so a folder of 32x32
CIFAR JPEGs reaches a 32x32 model pixel for pixel.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from snacs.data.base import TensorImageDataset, _affine
from snacs.data.normalization import IMAGENET_MEAN, IMAGENET_STD, Stats, resolve_stats
from snacs.data.sampling import train_val_split
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

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pbm")
# Resize-then-crop ratio of the usual ImageNet evaluation transform (256 -> 224), used when only
# a crop is given.
_CROP_RATIO = 224 / 256
# Split names that stand in for each other when only one of them exists.
_ALIASES = {"test": ("val", "validation"), "val": ("test", "validation"),
            "validation": ("val", "test")}
_HOLDOUT_SPLITS = ("test", "val", "validation")
# Files that operating systems drop into folders; skipped without a word.
_JUNK = {"thumbs.db", "desktop.ini"}
_LISTED = 5


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _subdirs(path: Path) -> list[Path]:
    """Visible subdirectories (``.ipynb_checkpoints`` and the like are not classes)."""
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def _listing(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:_LISTED])
    return shown + (f" (and {len(items) - _LISTED} more)" if len(items) > _LISTED else "")


def _to_rgb(img: PILImage) -> np.ndarray:
    """8-bit RGB H×W×3 from any Pillow mode (16-bit grey is scaled, not clipped)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = np.asarray(img, dtype=np.float64)
        # 16-bit range to 8-bit: 65535 / 257 = 255 exactly
        grey = np.clip(np.floor(grey / 257.0 + 0.5), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # the documented route for palettes with transparency
    if img.mode != "RGB":
        img = img.convert("RGB")  # RGBA/LA drop alpha, as torchvision's loader does
    return np.asarray(img, dtype=np.uint8)


class ImageFolderDataset(Dataset):
    """Images in ``root/<split>/<class>/`` (or ``root/<class>/``), read and resized on access.

    Size options (an image already at the output size is used as it is, unless ``resize`` is
    given explicitly):

    * ``image_size=S``: the model's input size; other images get their shorter side resized to
      ``S`` (aspect kept), then an ``S``×``S`` centre crop.
    * ``resize=R`` / ``crop=C``: shorter side to ``R`` (every image whose shorter side is not
      already ``R``), then a ``C``×``C`` centre crop; ``crop`` alone (or ``image_size``) uses
      ``R = round(C / 0.875)`` (the ImageNet 256 → 224 transform) for images not already
      ``C``×``C``, ``resize`` alone crops ``R``×``R``. Nothing given: ``resize=256, crop=224``.
    * ``size=(h, w)``: resize straight to that size (aspect not kept); excludes the others.

    Args:
        root: dataset directory.
        split: ``"train"``, ``"test"``, ``"val"`` or another subdirectory. ``test`` and ``val``
            stand in for each other; with no split folders at all, ``train`` and
            ``test``/``val`` are a seeded class-stratified split of ``root/<class>/``.
        image_size: output side, see above.
        resize: shorter side before cropping.
        crop: side of the centre crop.
        size: exact output size ``(h, w)`` or an int for a square.
        mean: per-channel mean in [0, 1] units, three numbers or a preset name (``imagenet``,
            ``cifar10``, ``none``); default ImageNet's.
        std: per-channel std, likewise.
        classes: class names in label order (subdirectories); default all, sorted. Give the
            order the model was trained with when it differs.
        holdout_fraction: share of each class held out as test with no split folders.
        split_seed: seed of that split.
        skip_bad_images: decode every image now and leave out the unreadable ones (counted in
            ``preprocessing``) instead of stopping at the first one.

    Attributes:
        preprocessing: what was done to the images, for result files: layout, split used,
            sizes, colour conversion, normalisation, files skipped.

    Raises:
        DataError: missing directory, no classes, nested class folders, no or unreadable images.
        ConfigError: inconsistent size options.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        image_size: int | None = None,
        resize: int | None = None,
        crop: int | None = None,
        size: int | Sequence[int] | None = None,
        mean: Stats | None = None,
        std: Stats | None = None,
        classes: Sequence[str] | None = None,
        holdout_fraction: float = 0.2,
        split_seed: int = 0,
        skip_bad_images: bool = False,
    ) -> None:
        pre: dict[str, Any] = {}
        self._size, self._resize, self._crop = None, None, None
        self._resize_all = False
        if size is not None:
            if image_size is not None or crop is not None or resize is not None:
                raise ConfigError("give either size, or image_size/resize/crop, not both")
            self._size = _pair(size)
            out = self._size
            pre["size"] = list(out)
            pre["transform"] = (f"images already {out[0]}x{out[1]} are used as they are; "
                                f"others are resized to {out[0]}x{out[1]} (bilinear, aspect not "
                                "kept)")
        else:
            if image_size is not None and crop is not None and int(crop) != int(image_size):
                raise ConfigError(
                    f"image_size ({image_size}) and crop ({crop}) disagree: the crop is the "
                    "output size; give one of them (--image-size 224 --resize 256, or --crop 224 "
                    "--resize 256)")
            c = crop if crop is not None else image_size
            if c is None:
                c = resize if resize is not None else 224
            self._crop = int(c)
            # an explicit resize applies to every image; a derived one spares native-size images
            self._resize_all = resize is not None
            if resize is not None:
                self._resize = int(resize)
            elif image_size is not None:
                self._resize = self._crop
            else:
                self._resize = round(self._crop / _CROP_RATIO)
            if self._resize < self._crop:
                raise ConfigError(f"resize ({self._resize}) must be at least crop ({self._crop})")
            out = (self._crop, self._crop)
            pre.update(resize=self._resize, crop=self._crop)
            spared = ("every image whose shorter side is not " + str(self._resize)
                      if self._resize_all else
                      f"images already {self._crop}x{self._crop} are used as they are; others")
            pre["transform"] = (f"{spared}: shorter side resized to {self._resize} (bilinear), "
                                f"then a centre crop of {self._crop}x{self._crop}")
        if min(out) <= 0:
            raise ConfigError(f"image size must be positive, got {out}")
        self._out = out
        pre["color"] = "RGB (grey, palette, RGBA, CMYK, 16-bit converted; alpha dropped)"

        self.root = Path(root).expanduser()
        self.split = split
        if not self.root.is_dir():
            raise DataError(
                f"image folder {self.root} does not exist. Fix: pass --data-root pointing at a "
                f"directory laid out as <root>/{split}/<class>/*.jpg (or <root>/<class>/*.jpg)")
        folder, used, single = self._find_split(split)
        pre["layout"] = "root/<class>/ (no split folders)" if single else "root/<split>/<class>/"
        pre["split"] = used if not single else split
        # Class names come from every split so labels agree between, e.g., train and val even
        # when one split lacks a class.
        split_dirs = [self.root] if single else _subdirs(self.root)
        names = sorted({c.name for s in split_dirs for c in _subdirs(s)})
        if classes is not None:
            unknown = sorted(set(classes) - set(names))
            if unknown:
                where = f"{self.root}/<class>/" if single else f"{self.root}/<split>/"
                raise DataError(f"classes {unknown} have no directory in {where}; found "
                                f"{_listing(names)}")
            names = list(classes)
        if not names:
            raise DataError(f"{folder} has no class subdirectories (<class>/*.jpg)")
        paths, labels, ignored = self._list_files(folder, names)
        if single:
            paths, labels = self._holdout(paths, labels, split, holdout_fraction, split_seed, pre)
        if ignored:
            logger.warning("ignored %d file(s) without an image extension under %s: %s",
                           len(ignored), folder, _listing([str(p) for p in ignored]))
            pre["ignored_files"] = len(ignored)
        if not paths:
            raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}/<class>/")
        if skip_bad_images:
            paths, labels, bad = self._drop_unreadable(paths, labels)
            pre["skipped_bad_images"] = len(bad)
            if bad:
                logger.warning("skipped %d unreadable image(s): %s", len(bad),
                               _listing([str(p) for p in bad]))
            if not paths:
                raise DataError(f"no readable images under {folder}/<class>/")
        self.paths = paths
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.classes = names
        self.mean, self.std = resolve_stats(mean, std, 3, "image-folder",
                                            (IMAGENET_MEAN, IMAGENET_STD))
        pre.update(mean=list(self.mean), std=list(self.std))
        self.preprocessing = pre
        self.name = "image-folder"
        self._scale, self._shift = _affine(self.mean, self.std)

    # -- layout
    def _find_split(self, split: str) -> tuple[Path, str, bool]:
        """(folder to read, split folder used, whether root has no split folders)."""
        if (self.root / split).is_dir():
            return self.root / split, split, False
        for alt in _ALIASES.get(split, ()):
            if (self.root / alt).is_dir():
                logger.info("%s has no %r folder; using %r as the %s split", self.root, split,
                            alt, split)
                return self.root / alt, alt, False
        subs = _subdirs(self.root)
        has_split_dirs = any(s.name in ("train", *_HOLDOUT_SPLITS) for s in subs)
        if subs and not has_split_dirs and any(_is_image(p) for s in subs for p in s.iterdir()):
            if split != "train" and split not in _HOLDOUT_SPLITS:
                raise DataError(
                    f"{self.root} holds class folders and no split folders, so it only has the "
                    f"splits 'train' and 'test' (a seeded stratified split); got {split!r}")
            return self.root, split, True
        found = f"; it holds {_listing([s.name for s in subs])}" if subs else " (it is empty)"
        raise DataError(
            f"image folder {self.root / split} does not exist{found}. Fix: pass --data-root "
            f"pointing at a directory laid out as <root>/{split}/<class>/*.jpg, or at one "
            "laid out as <root>/<class>/*.jpg (then split into train and test here)")

    def _list_files(
        self, folder: Path, names: Sequence[str]
    ) -> tuple[list[Path], list[int], list[Path]]:
        paths: list[Path] = []
        labels: list[int] = []
        ignored: list[Path] = []
        for k, name in enumerate(names):
            cdir = folder / name
            entries = sorted(cdir.iterdir()) if cdir.is_dir() else []
            nested = [p.name for p in entries if p.is_dir() and not p.name.startswith(".")]
            if nested:
                raise DataError(
                    f"class folder {cdir} holds subfolders ({_listing(nested)}); snacs reads the "
                    f"images directly inside <root>/<split>/<class>/ and does not descend "
                    "further. Fix: move the images up into the class folder (one folder per "
                    "class), or point --data-root at the directory whose subfolders are the "
                    "splits or the classes")
            files = [p for p in entries if p.is_file() and not p.name.startswith(".")
                     and p.name.lower() not in _JUNK]
            images = [p for p in files if _is_image(p)]
            ignored += [p for p in files if not _is_image(p)]
            if not images:
                logger.warning("class %r has no images in %s", name, cdir)
            paths += images
            labels += [k] * len(images)
        return paths, labels, ignored

    def _holdout(self, paths: list[Path], labels: list[int], split: str, fraction: float,
                 seed: int, pre: dict[str, Any]) -> tuple[list[Path], list[int]]:
        """The ``split`` part of a seeded class-stratified train/test split."""
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"holdout_fraction must be in (0, 1), got {fraction}")
        train_idx, test_idx = train_val_split(labels, fraction, seed=seed)
        idx = train_idx if split == "train" else test_idx
        pre["holdout"] = {"fraction": fraction, "seed": seed, "train": int(train_idx.numel()),
                          "test": int(test_idx.numel())}
        logger.info("%s has no split folders: split %d train / %d test images (fraction %.2f, "
                    "seed %d, stratified by class)", self.root, train_idx.numel(),
                    test_idx.numel(), fraction, seed)
        keep = idx.tolist()
        return [paths[i] for i in keep], [labels[i] for i in keep]

    @staticmethod
    def _drop_unreadable(
        paths: list[Path], labels: list[int]
    ) -> tuple[list[Path], list[int], list[Path]]:
        from PIL import Image

        ok: list[int] = []
        bad: list[Path] = []
        for i, p in enumerate(paths):  # decoding is per file by nature
            try:
                with Image.open(p) as img:
                    img.load()
                ok.append(i)
            except Exception:  # noqa: BLE001 - any decoding failure makes the file unusable
                bad.append(p)
        return [paths[i] for i in ok], [labels[i] for i in ok], bad

    # -- dataset protocol
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
        from PIL import Image

        path = self.paths[index]
        try:
            with Image.open(path) as img:
                arr = self._transform(_to_rgb(img))
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
            raise DataError(
                f"cannot read image {path}: {exc}. Fix: remove or replace the file, or pass "
                "--skip-bad-images (skip_bad_images=True) to leave unreadable images out"
            ) from exc
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def _transform(self, arr: np.ndarray) -> np.ndarray:
        """Resize/crop H×W×3 uint8; an image already at the output size is returned as it is."""
        from PIL import Image

        h, w = arr.shape[:2]
        oh, ow = self._out
        if (h, w) == (oh, ow) and not (self._resize_all and min(h, w) != self._resize):
            return arr
        img = Image.fromarray(arr)
        if self._size is not None:
            return np.asarray(img.resize((ow, oh), Image.Resampling.BILINEAR))
        short = self._resize
        assert short is not None and self._crop is not None
        if min(w, h) != short:
            if w <= h:
                nw, nh = short, max(short, round(h * short / w))
            else:
                nw, nh = max(short, round(w * short / h)), short
            img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        nw, nh = img.size
        c = self._crop
        left, top = (nw - c) // 2, (nh - c) // 2
        return np.asarray(img.crop((left, top, left + c, top + c)))

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
            preprocessing=self.preprocessing,
        )


def image_folder(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    *,
    image_size: int | None = None,
    resize: int | None = None,
    crop: int | None = None,
    size: int | Sequence[int] | None = None,
    mean: Stats | None = None,
    std: Stats | None = None,
    classes: Sequence[str] | None = None,
    holdout_fraction: float = 0.2,
    split_seed: int = 0,
    skip_bad_images: bool = False,
    in_memory: bool = False,
) -> ImageFolderDataset | TensorImageDataset:
    """Open an image folder as a dataset; see :class:`ImageFolderDataset` for every option.

    Args:
        split: ``train``, ``test``/``val`` or another subdirectory of ``root``.
        root: dataset directory (required).
        image_size: output side; images of that size are used as they are, others get their
            shorter side resized to it and a centre crop.
        resize: shorter side before cropping, applied to every image whose shorter side differs.
        crop: centre-crop side (alone: resize ``round(crop / 0.875)``).
        size: resize straight to this size instead of resize-and-crop.
        mean: per-channel mean (numbers or ``imagenet``/``cifar10``/``none``), default ImageNet's.
        std: per-channel std, likewise.
        classes: class names in label order.
        holdout_fraction: test share per class when ``root`` has no split folders.
        split_seed: seed of that split.
        skip_bad_images: leave unreadable images out (counted) instead of stopping.
        in_memory: decode everything now and return a :class:`TensorImageDataset`.
    """
    if root is None:
        raise ConfigError(
            "the image-folder dataset needs a root directory: pass --data-root "
            "(root=... in Python) laid out as <root>/<split>/<class>/*.jpg or <root>/<class>/*.jpg"
        )
    ds = ImageFolderDataset(root, split, image_size=image_size, resize=resize, crop=crop,
                            size=size, mean=mean, std=std, classes=classes,
                            holdout_fraction=holdout_fraction, split_seed=split_seed,
                            skip_bad_images=skip_bad_images)
    return ds.to_memory() if in_memory else ds
