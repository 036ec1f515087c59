"""The cifar10-jpeg dataset: clear errors without the archive, an unpacked folder used as it is,
and (slow, when the shared archive is present) the real copy at native size."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from snacs.data import get_dataset
from snacs.data.cifar_jpeg import CIFAR10_CLASSES, find_cifar10_jpeg_archive
from snacs.errors import DataError


def test_missing_archive_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.tar\.gz does not exist"):
        get_dataset("cifar10-jpeg", "test", root=tmp_path, archive=tmp_path / "nope.tar.gz")


def test_damaged_archive_refused(tmp_path: Path) -> None:
    fake = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(fake, "w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo("cifar10-jpeg/train/cat/0.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match="sha256.*copy it again"):
        get_dataset("cifar10-jpeg", "train", root=tmp_path / "cache", archive=fake)
    assert not (tmp_path / "cache" / "cifar10-jpeg").exists()  # nothing half-unpacked


def test_unpacked_folder_used_at_native_size(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = {}
    for k, name in enumerate(CIFAR10_CLASSES):
        d = tmp_path / "cifar10-jpeg" / "test" / name
        d.mkdir(parents=True)
        arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(arr).save(d / "0000.png")  # lossless, so pixels can be compared
        pixels[k] = arr
    ds = get_dataset("cifar10-jpeg", "test", root=tmp_path)
    assert len(ds) == 10 and ds.classes == CIFAR10_CLASSES and ds.image_shape == (3, 32, 32)
    for i in range(10):
        k = int(ds.labels[i])
        assert torch.equal(ds.images[i], torch.from_numpy(pixels[k]).permute(2, 0, 1))


@pytest.mark.slow
def test_real_archive(tmp_path: Path) -> None:
    archive = find_cifar10_jpeg_archive()
    if archive is None:
        pytest.skip("shared/data/cifar10-jpeg.tar.gz is not on this machine")
    from PIL import Image

    ds = get_dataset("cifar10-jpeg", "test", root=tmp_path)
    assert len(ds) == 10_000 and ds.image_shape == (3, 32, 32)
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    first = sorted((tmp_path / "cifar10-jpeg" / "test" / "airplane").iterdir())[0]
    with Image.open(first) as img:
        ref = torch.from_numpy(np.asarray(img.convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(ds.images[0], ref)  # decoded as stored: no resize, no crop
    again = get_dataset("cifar10-jpeg", "test", root=tmp_path)  # from the decoded cache
    assert torch.equal(again.images, ds.images)
