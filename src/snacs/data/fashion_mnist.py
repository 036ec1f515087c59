"""Fashion-MNIST from IDX files, as Debian's ``dataset-fashion-mnist`` installs them.

IDX format (LeCun's MNIST page): a big-endian header ``00 00 <dtype> <ndim>`` followed by
``ndim`` big-endian uint32 sizes and the raw data. Only unsigned bytes (dtype 0x08) occur here.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import torch

from snacs.data.base import TensorImageDataset
from snacs.data.normalization import Stats, resolve_stats
from snacs.errors import ConfigError, DataError

__all__ = ["FASHION_MNIST_CLASSES", "DEFAULT_FASHION_MNIST_ROOT", "fashion_mnist", "read_idx"]

logger = logging.getLogger(__name__)

DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# Published statistics of the unpadded training images; used only when the train files needed to
# compute them are absent (e.g. a directory holding only the test split).
_PUBLISHED_MEAN, _PUBLISHED_STD = 0.2860, 0.3530

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UBYTE = 0x08

# (path, mtime_ns, size) of a train image file -> (E[x], E[x^2]) of its pixels in [0, 1] units.
_stats_cache: dict[tuple[str, int, int], tuple[float, float]] = {}
_stats_lock = threading.Lock()


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file of unsigned bytes, gzipped or not.

    Raises:
        DataError: the file is unreadable, not IDX, not uint8, truncated or has trailing bytes.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"cannot read {path}: {exc}; the file is corrupt or truncated, delete it and "
            "reinstall the dataset"
        ) from exc
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file: only {len(raw)} bytes")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or ndim == 0:
        raise DataError(f"{path} is not an IDX file (bad magic number 0x{raw[:4].hex()})")
    if dtype != _IDX_UBYTE:
        raise DataError(f"{path}: IDX data type 0x{dtype:02x} is not unsigned byte (0x08)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: the IDX header needs {header} bytes")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: header dims {dims} need {expected} bytes of data, found {got}; "
            "delete it and reinstall the dataset"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _default_root() -> Path:
    return Path(os.environ.get("SNACS_FASHION_MNIST") or DEFAULT_FASHION_MNIST_ROOT)


def _find(root: Path, base: str) -> Path | None:
    """The file ``base`` in ``root`` or ``root/fashion-mnist``, gzipped or not."""
    for folder in (root, root / "fashion-mnist"):
        for name in (base + ".gz", base):
            if (folder / name).is_file():
                return folder / name
    return None


def _missing(root: Path, split: str) -> DataError:
    names = ", ".join(f"{b}.gz" for b in _FILES[split])
    return DataError(
        f"Fashion-MNIST {split} files ({names}) not found in {root}. Fix: install Debian's "
        f"package (apt-get install dataset-fashion-mnist, files go to "
        f"{DEFAULT_FASHION_MNIST_ROOT}), set SNACS_FASHION_MNIST, or pass --data-root "
        "pointing at the directory holding the IDX files"
    )


def _train_moments(root: Path, images: np.ndarray | None = None) -> tuple[float, float] | None:
    """E[x] and E[x^2] of the unpadded train pixels in [0, 1] units, cached per file version.

    ``images``: the train images when the caller has already read them.
    """
    path = _find(root, _FILES["train"][0])
    if path is None:
        return None
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    with _stats_lock:
        if key in _stats_cache:
            return _stats_cache[key]
    if images is None:
        images = read_idx(path)
    # A 256-bin histogram gives exact moments of uint8 data without a float copy of 47M pixels.
    pixels = torch.from_numpy(images).flatten()
    hist = torch.bincount(pixels, minlength=256).double().numpy()
    values = np.arange(256, dtype=np.float64) / 255.0
    n = hist.sum()
    moments = (float(hist @ values / n), float(hist @ values**2 / n))
    with _stats_lock:
        _stats_cache[key] = moments
    return moments


def _padded_stats(moments: tuple[float, float], pad_to: int) -> tuple[float, float]:
    """Mean and std after zero-padding 28×28 to ``pad_to``: zeros scale both raw moments."""
    frac = 28 * 28 / pad_to**2
    mean = frac * moments[0]
    var = frac * moments[1] - mean**2
    return mean, float(np.sqrt(max(var, 0.0)))


def fashion_mnist(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    pad_to: int | None = 32,
    channels: int = 1,
    mean: Stats | None = None,
    std: Stats | None = None,
) -> TensorImageDataset:
    """Load Fashion-MNIST into memory.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: directory holding the IDX files (``.gz`` or not), or its parent containing
            ``fashion-mnist/``. Default: ``$SNACS_FASHION_MNIST`` or
            ``/usr/share/datasets/fashion-mnist``.
        pad_to: zero-pad the 28×28 images, centred, to this size (32 lets CIFAR models run);
            ``None`` or 28 keeps them as they are.
        channels: 1, or 3 to repeat the grey channel for RGB models.
        mean: per-channel mean (one number for every channel, one per channel, or ``none``;
            ``imagenet``/``cifar10`` with ``channels=3``); default the train split's own.
        std: per-channel std, likewise.

    Returns:
        A dataset whose mean/std are those of the (padded) train split, computed from the data.

    Raises:
        DataError: files missing, corrupt or inconsistent.
        ConfigError: bad ``split``, ``pad_to`` or ``channels``.
    """
    if split not in _FILES:
        raise ConfigError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels}")
    size = 28 if pad_to is None else int(pad_to)
    if size < 28:
        raise ConfigError(f"pad_to must be at least 28 (the image size), got {pad_to}")
    root = Path(root).expanduser() if root is not None else _default_root()

    paths = [_find(root, base) for base in _FILES[split]]
    if paths[0] is None or paths[1] is None:
        raise _missing(root, split)
    images = read_idx(paths[0])
    labels = read_idx(paths[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{paths[0]}: expected N×28×28 images, header says {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{paths[1]}: expected a 1-d label file, header says {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{paths[0].name} has {images.shape[0]} images but {paths[1].name} has "
            f"{labels.shape[0]} labels; the files are from different releases, reinstall them"
        )
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{paths[1]}: label {int(labels.max())} out of range 0..9")

    x = torch.from_numpy(images).unsqueeze(1)
    if size > 28:
        lo = (size - 28) // 2
        padded = torch.zeros(x.shape[0], 1, size, size, dtype=torch.uint8)
        padded[:, :, lo : lo + 28, lo : lo + 28] = x
        x = padded
    if channels == 3:
        x = x.expand(-1, 3, -1, -1)  # a view: no copy of the grey data

    moments = _train_moments(root, images if split == "train" else None)
    if moments is None:
        logger.warning(
            "Fashion-MNIST train images not found in %s; normalising with the published "
            "statistics instead of ones computed from the data",
            root,
        )
        moments = (_PUBLISHED_MEAN, _PUBLISHED_STD**2 + _PUBLISHED_MEAN**2)
    m, s = _padded_stats(moments, size)
    mean_t, std_t = resolve_stats(mean, std, channels, "fashion-mnist",
                                  ((m,) * channels, (s,) * channels))
    logger.debug("fashion-mnist %s: %d images, mean %s std %s", split, len(x), mean_t, std_t)
    return TensorImageDataset(
        x,
        torch.from_numpy(labels.astype(np.int64)),
        FASHION_MNIST_CLASSES,
        mean_t,
        std_t,
        name="fashion-mnist",
        split=split,
        preprocessing={"transform": f"28x28 zero-padded to {size}x{size}, {channels} channel(s)"},
    )
