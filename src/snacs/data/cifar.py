"""CIFAR-10 in the official python-pickle layout, with a checksummed, atomic download."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

import numpy as np
import torch

from snacs.data.base import TensorImageDataset
from snacs.data.normalization import CIFAR10_MEAN, CIFAR10_STD, Stats
from snacs.errors import ConfigError, DataError

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "cifar10",
    "default_data_root",
    "download_cifar10",
]

logger = logging.getLogger(__name__)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
_SPLIT_FILES = {
    "train": [f"data_batch_{i}" for i in range(1, 6)],
    "test": ["test_batch"],
}
_CHUNK = 1 << 20


def default_data_root() -> Path:
    """``$SNACS_DATA`` or ``~/.cache/snacs/data``."""
    env = os.environ.get("SNACS_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "snacs" / "data"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays: a pickle cannot run arbitrary code through it."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict[Any, Any]:
    try:
        with path.open("rb") as fh:
            obj = _ArrayUnpickler(fh, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise DataError(
            f"cannot read CIFAR-10 file {path}: {exc}; delete {path.parent} and download again"
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (expected a dict)")
    # Keys are bytes in the official (Python 2) pickles and str in re-pickled copies.
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _load_pickle(path)
    if "data" not in d or "labels" not in d:
        raise DataError(f"{path} is not a CIFAR-10 batch: keys {sorted(map(str, d))}")
    data = np.asarray(d["data"], dtype=np.uint8)
    labels = np.asarray(d["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise DataError(
            f"{path}: expected data of shape N×3072 and N labels, got {data.shape} and "
            f"{labels.shape}; delete the directory and download again"
        )
    return data, labels


def _class_names(folder: Path) -> list[str]:
    meta = folder / "batches.meta"
    if not meta.is_file():
        return list(CIFAR10_CLASSES)
    names = _load_pickle(meta).get("label_names")
    if not names:
        return list(CIFAR10_CLASSES)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _missing(folder: Path, split: str, absent: list[str]) -> DataError:
    return DataError(
        f"CIFAR-10 {split} files not found: expected {', '.join(absent)} in {folder}. Fix: pass "
        f"--data-root pointing at the directory that contains {CIFAR10_DIR}/, set SNACS_DATA, or "
        f"let snacs fetch it with --download (download=True in Python)"
    )


def cifar10(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    mean: Stats | None = None,
    std: Stats | None = None,
) -> TensorImageDataset:
    """Load CIFAR-10 into memory.

    Args:
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        root: directory containing ``cifar-10-batches-py/``. Default: ``$SNACS_DATA`` or
            ``~/.cache/snacs/data``.
        download: fetch and verify the archive when the files are absent.
        mean: per-channel mean, three numbers or a preset (``cifar10``, ``imagenet``, ``none``);
            default CIFAR-10's training-set statistics.
        std: per-channel std, likewise.

    Raises:
        DataError: files missing (and ``download`` is false), corrupt, or the download failed.
        ConfigError: bad ``split``.
    """
    if split not in _SPLIT_FILES:
        raise ConfigError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    from snacs.data.normalization import resolve_stats

    mean_t, std_t = resolve_stats(mean, std, 3, "cifar10", (CIFAR10_MEAN, CIFAR10_STD))
    root = Path(root).expanduser() if root is not None else default_data_root()
    folder = root / CIFAR10_DIR
    absent = [f for f in _SPLIT_FILES[split] if not (folder / f).is_file()]
    if absent and download:
        download_cifar10(root)
        absent = [f for f in _SPLIT_FILES[split] if not (folder / f).is_file()]
    if absent:
        raise _missing(folder, split, absent)

    parts = [_read_batch(folder / f) for f in _SPLIT_FILES[split]]
    data = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    # Rows are stored channel-major: 1024 red, 1024 green, 1024 blue values, row by row.
    images = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32)
    logger.debug("cifar10 %s: %d images from %s", split, len(images), folder)
    return TensorImageDataset(
        images,
        torch.from_numpy(labels),
        _class_names(folder),
        mean_t,
        std_t,
        name="cifar10",
        split=split,
        preprocessing={"transform": "native 32x32, no resizing"},
    )


def _fetch(url: str, dest: Path, timeout: float) -> str:
    """Stream ``url`` to ``dest`` and return the md5 hex digest of what was written."""
    md5 = hashlib.md5()
    try:
        with urlopen(url, timeout=timeout) as response, dest.open("wb") as out:
            while chunk := response.read(_CHUNK):
                md5.update(chunk)
                out.write(chunk)
    except (URLError, OSError) as exc:
        raise DataError(
            f"downloading {url} failed: {exc}. Fix: check the network, or download the file "
            f"by hand, extract it and pass --data-root pointing at the directory holding "
            f"{CIFAR10_DIR}/"
        ) from exc
    return md5.hexdigest()


def _safe_members(
    tar: tarfile.TarFile, archive: str, prefix: str = CIFAR10_DIR
) -> list[tarfile.TarInfo]:
    """Regular files and directories inside ``prefix/``; anything else is refused."""
    members = []
    for m in tar.getmembers():
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir()):
            raise DataError(f"{archive} contains an unsafe entry {m.name!r}; refusing to extract")
        if p.parts and p.parts[0] == prefix:
            members.append(m)
    return members


def download_cifar10(
    root: str | os.PathLike[str] | None = None,
    url: str = CIFAR10_URL,
    md5: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download, verify and extract CIFAR-10 into ``root/cifar-10-batches-py``.

    The archive goes to a temporary file next to the target, its md5 is checked, its entries are
    checked for path traversal, and the extracted folder is renamed into place in one step, so an
    interrupted download never leaves a half-written dataset behind.

    Args:
        root: target directory (default as in :func:`cifar10`).
        url: archive URL.
        md5: expected checksum; default :data:`CIFAR10_MD5`.
        timeout: socket timeout in seconds.

    Returns:
        The extracted ``cifar-10-batches-py`` directory.

    Raises:
        DataError: network error, checksum mismatch or an unsafe archive.
    """
    root = Path(root).expanduser() if root is not None else default_data_root()
    expected = (md5 or CIFAR10_MD5).lower()
    target = root / CIFAR10_DIR
    wanted = [f for fs in _SPLIT_FILES.values() for f in fs]
    if target.exists():
        absent = [f for f in wanted if not (target / f).is_file()]
        if not absent:
            return target
        # Never delete or merge into what the user already has.
        raise DataError(
            f"{target} exists but is incomplete (missing {', '.join(absent)}). Fix: delete it "
            "and run again with --download"
        )
    root.mkdir(parents=True, exist_ok=True)
    logger.info("downloading CIFAR-10 from %s to %s", url, root)
    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=".cifar-10-", suffix=".tar.gz.part")
    os.close(fd)
    archive = Path(tmp_name)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".cifar-10-extract-"))
    try:
        digest = _fetch(url, archive, timeout)
        if digest != expected:
            raise DataError(
                f"checksum mismatch for {url}: md5 {digest}, expected {expected}. The download "
                "is corrupt or was tampered with; it has been deleted. Retry, or download by "
                "hand and pass --data-root"
            )
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = _safe_members(tar, url)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members=members, filter="data")
                else:  # pragma: no cover - Python < 3.11.4; members were vetted above
                    tar.extractall(staging, members=members)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"cannot extract {url}: {exc}") from exc
        extracted = staging / CIFAR10_DIR
        if not extracted.is_dir():
            raise DataError(f"{url} does not contain {CIFAR10_DIR}/; is it the python version?")
        try:
            os.replace(extracted, target)
        except OSError as exc:  # another process finished first
            if not target.is_dir():
                raise DataError(f"cannot move the extracted data to {target}: {exc}") from exc
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("CIFAR-10 ready in %s", target)
    return target
