"""CIFAR-10 as a JPEG image-folder archive (``cifar10-jpeg.tar.gz``), unpacked once into a cache.

The archive holds ``cifar10-jpeg/{train,test}/<class>/<NNNN>.jpg``: the 60,000 CIFAR-10 images
re-encoded as 32x32 JPEG. It is unpacked once into ``<cache>/cifar10-jpeg`` (never next to the
archive, which may be read-only), decoded through the image-folder loader at native size, and the
decoded uint8 tensors are kept in ``<cache>/cifar10-jpeg-<split>.pt`` so later loads take a second.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import torch

from snacs.data.base import TensorImageDataset
from snacs.data.cifar import CIFAR10_CLASSES, _safe_members, default_data_root
from snacs.data.normalization import Stats, resolve_stats
from snacs.errors import ConfigError, DataError
from snacs.io import file_sha256

__all__ = ["CIFAR10_JPEG_ARCHIVE", "CIFAR10_JPEG_SHA256", "cifar10_jpeg", "find_cifar10_jpeg_archive"]

logger = logging.getLogger(__name__)

CIFAR10_JPEG_ARCHIVE = "cifar10-jpeg.tar.gz"
CIFAR10_JPEG_SHA256 = "41d457d67322e21e3d9371c40f30d103f7bacab898db8a386036175deec09328"
_DIR = "cifar10-jpeg"
# The shared pretrained checkpoints (akamaster's CIFAR ResNets) were trained with these.
_DEFAULT_MEAN = (0.485, 0.456, 0.406)
_DEFAULT_STD = (0.229, 0.224, 0.225)
_SPLITS = {"train": 50_000, "test": 10_000}


def find_cifar10_jpeg_archive(archive: str | os.PathLike[str] | None = None) -> Path | None:
    """The archive to unpack: ``archive``, ``$SNACS_CIFAR10_JPEG``, or ``shared/data`` beside the
    project checkout (``../shared/data`` from the repository root); None when none exists."""
    candidates: list[Path] = []
    if archive is not None:  # an explicit path is the only one looked at
        p = Path(archive).expanduser()
        return p if p.is_file() else None
    env = os.environ.get("SNACS_CIFAR10_JPEG")
    if env:
        candidates.append(Path(env).expanduser())
    here = Path(__file__).resolve()
    for parent in list(here.parents)[:6]:
        candidates.append(parent.parent / "shared" / "data" / CIFAR10_JPEG_ARCHIVE)
    candidates.append(Path.cwd().parent / "shared" / "data" / CIFAR10_JPEG_ARCHIVE)
    for c in candidates:
        if c.is_file():
            return c
    return None


def _unpack(archive: Path, cache: Path) -> Path:
    """Extract ``archive`` into ``cache/cifar10-jpeg`` atomically (temp dir, then rename)."""
    target = cache / _DIR
    if (target / "train").is_dir() and (target / "test").is_dir():
        return target
    digest = file_sha256(archive)
    if digest != CIFAR10_JPEG_SHA256:
        raise DataError(
            f"{archive} has sha256 {digest[:16]}…, expected {CIFAR10_JPEG_SHA256[:16]}…; the "
            "archive is damaged or a different file. Fix: copy it again"
        )
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".cifar10-jpeg-", dir=cache))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, members=_safe_members(tar, str(archive), _DIR))  # noqa: S202 - checked
        inner = tmp / _DIR
        if not (inner / "train").is_dir():
            raise DataError(f"{archive} does not contain {_DIR}/train/<class>/*.jpg")
        if target.exists():
            shutil.rmtree(target)
        os.replace(inner, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("unpacked %s into %s", archive, target)
    return target


def cifar10_jpeg(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    *,
    archive: str | os.PathLike[str] | None = None,
    mean: Stats | None = None,
    std: Stats | None = None,
) -> TensorImageDataset:
    """The JPEG copy of CIFAR-10 at its native 32x32, in memory.

    Args:
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        root: cache directory to unpack into (default ``$SNACS_DATA`` or ``~/.cache/snacs/data``).
            An already unpacked ``root/cifar10-jpeg`` is used without the archive.
        archive: path of ``cifar10-jpeg.tar.gz`` (default ``$SNACS_CIFAR10_JPEG``, then
            ``shared/data/`` next to the checkout).
        mean: per-channel mean, three numbers or a preset (``imagenet``, ``cifar10``, ``none``);
            default ImageNet's, which the shared pretrained ResNets expect.
        std: per-channel std, likewise.

    Raises:
        DataError: archive missing or damaged.
        ConfigError: bad split.
    """
    if split not in _SPLITS:
        raise ConfigError(f"cifar10-jpeg split must be 'train' or 'test', got {split!r}")
    mean, std = resolve_stats(mean, std, 3, "cifar10-jpeg", (_DEFAULT_MEAN, _DEFAULT_STD))
    pre = {"transform": "native 32x32, no resizing", "size": [32, 32]}
    cache = Path(root).expanduser() if root is not None else default_data_root()
    decoded = cache / f"{_DIR}-{split}.pt"
    if decoded.is_file():
        try:
            blob = torch.load(decoded, map_location="cpu", weights_only=True)
            images, labels = blob["images"], blob["labels"]
            if images.shape == (_SPLITS[split], 3, 32, 32):
                return TensorImageDataset(images, labels, CIFAR10_CLASSES, mean, std,
                                          name="cifar10-jpeg", split=split, preprocessing=pre)
        except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, not fatal
            logger.warning("decoded cache %s unreadable (%s); decoding again", decoded, exc)
    folder = cache / _DIR
    if not (folder / split).is_dir():
        found = find_cifar10_jpeg_archive(archive)
        if found is None and archive is not None:
            raise DataError(f"CIFAR-10 JPEG archive {archive} does not exist. Fix: give the path "
                            f"of {CIFAR10_JPEG_ARCHIVE} (archive=..., or $SNACS_CIFAR10_JPEG)")
        if found is None:
            raise DataError(
                f"CIFAR-10 JPEG archive {CIFAR10_JPEG_ARCHIVE} not found (looked for archive=, "
                "$SNACS_CIFAR10_JPEG and shared/data/ beside the checkout), and "
                f"{folder} is not unpacked. Fix: set SNACS_CIFAR10_JPEG=/path/to/"
                f"{CIFAR10_JPEG_ARCHIVE} or unpack it into {cache}"
            )
        folder = _unpack(found, cache)
    from snacs.data.folder import ImageFolderDataset

    ds = ImageFolderDataset(folder, split, size=32, mean=mean, std=std).to_memory()
    if ds.classes != CIFAR10_CLASSES:
        raise DataError(f"{folder}/{split} has classes {ds.classes}, expected {CIFAR10_CLASSES}")
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{decoded.name}.", dir=cache)
    os.close(fd)
    torch.save({"images": ds.images, "labels": ds.labels}, tmp)
    os.replace(tmp, decoded)
    ds.name = "cifar10-jpeg"
    ds.preprocessing = pre | {"mean": list(ds.mean), "std": list(ds.std)}
    return ds
