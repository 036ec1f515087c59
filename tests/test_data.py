"""Datasets, index selection and batch loading, on tiny files written into a temp directory."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

import snacs.data.cifar as cifar_mod
from snacs.data import (
    BatchLoader,
    ImageDataset,
    ImageFolderDataset,
    TensorImageDataset,
    cifar10,
    class_balanced_indices,
    fashion_mnist,
    get_dataset,
    image_folder,
    list_datasets,
    random_crop_flip,
    read_idx,
    synthetic,
    train_val_split,
)
from snacs.errors import ConfigError, DataError

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx(path: Path, arr: np.ndarray) -> None:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.fixture
def fmnist_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)))
    write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(20) % 10)
    write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (10, 28, 28)))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(10))
    return root


def cifar_batch(n: int, offset: int) -> dict[bytes, object]:
    rng = np.random.default_rng(offset)
    return {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"labels": [(offset + i) % 10 for i in range(n)],
        b"batch_label": b"tiny",
    }


def write_cifar(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(cifar_batch(2, 2 * (i - 1))))
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(3, 100)))
    names = [n.encode() for n in cifar_mod.CIFAR10_CLASSES]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    return folder


def cifar_tarball(tmp_path: Path) -> bytes:
    src = tmp_path / "src"
    write_cifar(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return buf.getvalue()


def serve(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> list[str]:
    """Replace the network fetch with ``payload``; returns the list of requested URLs."""
    calls: list[str] = []

    def fake_urlopen(url: str, timeout: float | None = None) -> io.BytesIO:
        calls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(cifar_mod, "urlopen", fake_urlopen)
    return calls


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 1)):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (12 + i, 16, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    # a grey JPEG with an upper-case extension must be picked up and converted to RGB
    Image.fromarray(np.full((20, 10), 128, np.uint8)).save(root / "train" / "dog" / "g.JPG")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    (root / "train" / "bird").mkdir()  # a class with no images in train only
    return root


def assert_standardised(ds: TensorImageDataset) -> None:
    x, _ = ds.get_batch(torch.arange(len(ds)))
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    torch.testing.assert_close(
        flat.mean(1), torch.zeros(x.shape[1], dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        flat.std(1, correction=0), torch.ones(x.shape[1], dtype=torch.float64), atol=1e-4, rtol=0
    )


# ---------------------------------------------------------------- Fashion-MNIST / IDX


def test_read_idx_gz_and_plain(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    write_idx(tmp_path / "a", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), arr)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x08\x03\x00\x00" + b"\x00" * 20, "bad magic"),
        (struct.pack(">HBBI", 0, 0x0D, 1, 4) + b"\x00" * 16, "not unsigned byte"),
        (
            struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">III", 5, 28, 28) + b"\x00" * 100,
            "truncated",
        ),
        (struct.pack(">HBB", 0, 0x08, 3) + b"\x00\x00", "truncated"),
        (struct.pack(">HBBI", 0, 0x08, 1, 2) + b"\x00\x01\x02", "longer than its header"),
    ],
)
def test_read_idx_rejects_corrupt_headers(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_read_idx_truncated_gzip(tmp_path: Path) -> None:
    good = gzip.compress(idx_bytes(np.zeros((10, 28, 28), np.uint8)))
    path = tmp_path / "x.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_idx(path)
    path.write_bytes(b"definitely not gzip")
    with pytest.raises(DataError, match=str(path)):
        read_idx(path)


def test_fashion_mnist_padding_and_channels(fmnist_dir: Path) -> None:
    raw = torch.from_numpy(read_idx(fmnist_dir / "train-images-idx3-ubyte.gz"))
    ds = fashion_mnist("train", root=fmnist_dir)
    assert isinstance(ds, ImageDataset)
    assert ds.image_shape == (1, 32, 32) and len(ds) == 20 and ds.num_classes == 10
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.labels.dtype == torch.int64
    assert ds.labels.tolist() == [i % 10 for i in range(20)]
    # centred zero padding, 2 px each side
    assert torch.equal(ds.images[:, 0, 2:30, 2:30], raw)
    border = ds.images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert int(border.abs().sum()) == 0

    unpadded = fashion_mnist("train", root=fmnist_dir, pad_to=None)
    assert unpadded.image_shape == (1, 28, 28)
    assert torch.equal(unpadded.images[:, 0], raw)

    rgb = fashion_mnist("test", root=fmnist_dir, channels=3)
    assert rgb.image_shape == (3, 32, 32) and len(rgb) == 10
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 2])
    x, y = rgb[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 3
    assert len(set(rgb.mean)) == 1 and len(rgb.mean) == 3


@pytest.mark.parametrize(("pad_to", "channels"), [(32, 1), (None, 1), (32, 3), (40, 1)])
def test_fashion_mnist_normalised_train_is_standard(
    fmnist_dir: Path, pad_to: int | None, channels: int
) -> None:
    assert_standardised(fashion_mnist("train", root=fmnist_dir, pad_to=pad_to, channels=channels))


def test_fashion_mnist_test_split_uses_train_statistics(fmnist_dir: Path) -> None:
    train = fashion_mnist("train", root=fmnist_dir)
    test = fashion_mnist("test", root=fmnist_dir)
    assert test.mean == train.mean and test.std == train.std
    # padding changes the statistics: zeros lower the mean by the area ratio
    unpadded = fashion_mnist("train", root=fmnist_dir, pad_to=None)
    assert train.mean[0] == pytest.approx(unpadded.mean[0] * 28 * 28 / 32 / 32)


def test_fashion_mnist_uncompressed_files_and_env(
    fmnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    for gz in fmnist_dir.iterdir():
        (plain / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    monkeypatch.setenv("SNACS_FASHION_MNIST", str(plain))
    ds = fashion_mnist("test")
    assert len(ds) == 10
    assert torch.equal(ds.images, fashion_mnist("test", root=fmnist_dir).images)


def test_fashion_mnist_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        fashion_mnist("train", root=missing)
    msg = str(err.value)
    assert str(missing) in msg
    assert "train-images-idx3-ubyte.gz" in msg
    assert "dataset-fashion-mnist" in msg and "--data-root" in msg


def test_fashion_mnist_inconsistent_files(fmnist_dir: Path) -> None:
    write_idx(fmnist_dir / "t10k-labels-idx1-ubyte.gz", np.arange(9))
    with pytest.raises(DataError, match="10 images but .* 9 labels"):
        fashion_mnist("test", root=fmnist_dir)


def test_fashion_mnist_bad_options(fmnist_dir: Path) -> None:
    with pytest.raises(ConfigError, match="split"):
        fashion_mnist("val", root=fmnist_dir)
    with pytest.raises(ConfigError, match="pad_to"):
        fashion_mnist("train", root=fmnist_dir, pad_to=20)
    with pytest.raises(ConfigError, match="channels"):
        fashion_mnist("train", root=fmnist_dir, channels=2)


@pytest.mark.skipif(
    not (REAL_FMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist() -> None:
    train = fashion_mnist("train", root=REAL_FMNIST)
    test = fashion_mnist("test", root=REAL_FMNIST)
    assert len(train) == 60000 and len(test) == 10000
    assert train.num_classes == 10 and train.image_shape == (1, 32, 32)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    unpadded = fashion_mnist("test", root=REAL_FMNIST, pad_to=None)
    assert unpadded.mean[0] == pytest.approx(0.2860, abs=1e-4)
    assert unpadded.std[0] == pytest.approx(0.3530, abs=1e-4)


# ---------------------------------------------------------------- CIFAR-10


def test_cifar10_reads_pickled_batches(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    train = cifar10("train", root=tmp_path)
    assert len(train) == 10 and train.image_shape == (3, 32, 32)
    assert train.labels.tolist() == list(range(10))
    assert train.classes == cifar_mod.CIFAR10_CLASSES
    first = cifar_batch(2, 0)[b"data"][0]
    # channel-major rows: the first 1024 values are the red plane, row by row
    assert torch.equal(train.images[0, 0].flatten(), torch.from_numpy(first[:1024]))
    assert torch.equal(train.images[0, 2].flatten(), torch.from_numpy(first[2048:]))
    test = cifar10("test", root=tmp_path)
    assert len(test) == 3 and test.mean == (0.4914, 0.4822, 0.4465)


def test_cifar10_default_root_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar(tmp_path)
    monkeypatch.setenv("SNACS_DATA", str(tmp_path))
    assert len(get_dataset("cifar10", "test")) == 3


def test_cifar10_missing_message(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        cifar10("train", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg
    assert "--data-root" in msg and "--download" in msg and "download=True" in msg


def test_cifar10_refuses_code_in_pickles(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match="not allowed"):
        cifar10("test", root=tmp_path)


def test_cifar10_download_verifies_and_extracts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = cifar_tarball(tmp_path)
    calls = serve(monkeypatch, payload)
    monkeypatch.setattr(cifar_mod, "CIFAR10_MD5", hashlib.md5(payload).hexdigest())
    root = tmp_path / "data"
    ds = cifar10("train", root=root, download=True)
    assert len(ds) == 10 and calls == [cifar_mod.CIFAR10_URL]
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]  # no temp leftovers
    cifar10("test", root=root, download=True)
    assert len(calls) == 1  # present now: not fetched again


def test_cifar10_download_wrong_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve(monkeypatch, cifar_tarball(tmp_path))  # real md5 constant: the tiny tarball mismatches
    root = tmp_path / "data"
    with pytest.raises(DataError, match="checksum mismatch") as err:
        cifar10("train", root=root, download=True)
    assert cifar_mod.CIFAR10_MD5 in str(err.value)
    assert list(root.iterdir()) == []


def test_cifar10_download_refuses_path_traversal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/../../escaped")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    payload = buf.getvalue()
    serve(monkeypatch, payload)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="unsafe"):
        cifar_mod.download_cifar10(root, md5=hashlib.md5(payload).hexdigest())
    assert not (tmp_path / "escaped").exists() and list(root.iterdir()) == []


def test_cifar10_download_network_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float | None = None) -> io.BytesIO:
        raise URLError("no route to host")

    monkeypatch.setattr(cifar_mod, "urlopen", offline)
    with pytest.raises(DataError, match="no route to host.*--data-root"):
        cifar10("train", root=tmp_path / "d", download=True)


# ---------------------------------------------------------------- image folders


def test_image_folder_lazy(folder_root: Path) -> None:
    ds = ImageFolderDataset(folder_root, "train", crop=8, resize=10)
    assert isinstance(ds, ImageDataset)
    assert ds.classes == ["bird", "cat", "dog"]
    assert len(ds) == 7 and ds.labels.tolist() == [1, 1, 1, 2, 2, 2, 2]
    assert ds.image_shape == (3, 8, 8)
    x, y = ds[6]  # the grey JPEG
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and y == 2
    u8 = ds.load_uint8(6)
    assert torch.equal(u8[0], u8[1]) and int(u8[0, 4, 4]) == 128
    expected = (128 / 255 - torch.tensor(ds.mean)) / torch.tensor(ds.std)
    torch.testing.assert_close(x[:, 4, 4], expected.float())
    assert ImageFolderDataset(folder_root, "train").image_shape == (3, 224, 224)


def test_image_folder_size_and_in_memory(folder_root: Path) -> None:
    lazy = image_folder("train", folder_root, size=(6, 10))
    mem = image_folder("train", folder_root, size=(6, 10), in_memory=True)
    assert isinstance(lazy, ImageFolderDataset) and isinstance(mem, TensorImageDataset)
    assert lazy.image_shape == mem.image_shape == (3, 6, 10)
    assert torch.equal(mem.labels, lazy.labels) and mem.classes == lazy.classes
    for i in (0, 4):
        torch.testing.assert_close(mem[i][0], lazy[i][0])
    val = image_folder("val", folder_root, size=4)
    assert val.classes == lazy.classes and val.labels.tolist() == [1, 2]


def test_image_folder_errors(folder_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist.*--data-root"):
        image_folder("holdout", folder_root)
    with pytest.raises(ConfigError, match="--data-root"):
        image_folder("train", None)
    with pytest.raises(ConfigError, match="either size"):
        image_folder("train", folder_root, size=8, crop=8)
    (folder_root / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    ds = image_folder("train", folder_root, size=8)
    bad = [i for i, p in enumerate(ds.paths) if p.name == "broken.png"][0]
    with pytest.raises(DataError, match="broken.png"):
        ds[bad]


def test_loader_over_image_folder(folder_root: Path) -> None:
    ds = image_folder("train", folder_root, size=8)
    batches = list(BatchLoader(ds, 3, shuffle=True, augment=True))
    assert [len(y) for _, y in batches] == [3, 3, 1]
    assert all(x.shape[1:] == (3, 8, 8) and x.dtype == torch.float32 for x, _ in batches)
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == sorted(ds.labels.tolist())


# ---------------------------------------------------------------- synthetic and registry


def test_synthetic_is_deterministic_and_balanced() -> None:
    a = synthetic("train", num_classes=4, n_per_class=8, shape=(3, 16, 16), seed=1)
    b = synthetic("train", num_classes=4, n_per_class=8, shape=(3, 16, 16), seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, synthetic("train", 4, 8, (3, 16, 16), seed=2).images)
    test = synthetic("test", num_classes=4, n_per_class=8, shape=(3, 16, 16), seed=1)
    assert not torch.equal(a.images, test.images) and test.mean == a.mean
    assert torch.bincount(a.labels).tolist() == [8] * 4
    assert a.image_shape == (3, 16, 16)
    assert_standardised(a)


def test_synthetic_classes_differ() -> None:
    ds = synthetic("train", num_classes=3, n_per_class=20, shape=(1, 16, 16))
    x, y = ds.get_batch(torch.arange(len(ds)))
    means = torch.stack([x[y == k].mean(0) for k in range(3)])
    within = torch.stack([(x[y == k] - means[k]).pow(2).mean() for k in range(3)]).mean()
    between = torch.cdist(means.flatten(1), means.flatten(1)).pow(2) / x[0].numel()
    assert between[~torch.eye(3, dtype=torch.bool)].min() > 0.5 * within


def test_registry() -> None:
    assert list_datasets() == ["cifar10", "cifar10-jpeg", "fashion-mnist", "image-folder",
                               "synthetic"]
    ds = get_dataset("Synthetic", "test", root="/ignored", n_per_class=2, num_classes=3)
    assert len(ds) == 6
    with pytest.raises(ConfigError, match="cifar10, cifar10-jpeg, fashion-mnist, image-folder, synthetic"):
        get_dataset("imagenet")
    with pytest.raises(ConfigError, match="no option.*pad_to"):
        get_dataset("synthetic", pad_to=32)


def test_registry_alias(fmnist_dir: Path) -> None:
    ds = get_dataset("fashion_mnist", "test", root=fmnist_dir, pad_to=None, channels=3)
    assert ds.image_shape == (3, 28, 28)


# ---------------------------------------------------------------- index selection


def test_class_balanced_indices() -> None:
    labels = torch.arange(100) % 4
    a = class_balanced_indices(labels, 5, seed=3)
    assert torch.equal(a, class_balanced_indices(labels.numpy(), 5, seed=3))
    assert a.dtype == torch.int64 and len(a) == 20 and len(set(a.tolist())) == 20
    assert torch.bincount(labels[a]).tolist() == [5] * 4
    # sorted by class, then by index
    assert labels[a].tolist() == sorted(labels[a].tolist())
    for k in range(4):
        chunk = a[labels[a] == k]
        assert torch.equal(chunk, chunk.sort().values)
    assert not torch.equal(a, class_balanced_indices(labels, 5, seed=4))
    # drawing the whole class returns every member: without replacement
    full = class_balanced_indices(labels, 25)
    assert torch.equal(full.sort().values, torch.arange(100))


def test_class_balanced_indices_exclude() -> None:
    labels = torch.arange(40) % 2
    _, val = train_val_split(labels, 0.25)
    idx = class_balanced_indices(labels, 15, exclude=val)
    assert not set(idx.tolist()) & set(val.tolist())
    with pytest.raises(DataError, match="outside the excluded"):
        class_balanced_indices(labels, 16, exclude=val)


def test_class_balanced_indices_errors() -> None:
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 10)
    with pytest.raises(DataError) as err:
        class_balanced_indices(labels, 5, class_names=["a", "b", "c"])
    msg = str(err.value)
    assert "class 1 (b): 3 available" in msg and "class 0" not in msg
    assert "--samples-per-class to at most 3" in msg
    with pytest.raises(DataError, match="class 3: 0 available"):
        class_balanced_indices(labels, 2, num_classes=4)
    with pytest.raises(ConfigError):
        class_balanced_indices(labels, 0)


def test_train_val_split() -> None:
    labels = torch.cat([torch.zeros(50), torch.ones(30), torch.full((20,), 2)]).long()
    tr, va = train_val_split(labels, 0.1, seed=0)
    assert not set(tr.tolist()) & set(va.tolist())
    assert torch.equal(torch.cat([tr, va]).sort().values, torch.arange(100))
    assert torch.bincount(labels[va]).tolist() == [5, 3, 2]
    tr2, va2 = train_val_split(labels, 0.1, seed=0)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    assert not torch.equal(va, train_val_split(labels, 0.1, seed=1)[1])
    assert len(train_val_split(labels, 0.0)[1]) == 0
    with pytest.raises(ConfigError):
        train_val_split(labels, 1.0)


# ---------------------------------------------------------------- batch loading


@pytest.fixture
def tiny() -> TensorImageDataset:
    return synthetic("train", num_classes=5, n_per_class=10, shape=(3, 8, 8))


def test_loader_batches_match_dataset(tiny: TensorImageDataset) -> None:
    loader = BatchLoader(tiny, 16)
    assert len(loader) == 4
    batches = list(loader)
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    x, y = batches[1]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    torch.testing.assert_close(x[3], tiny[19][0])
    assert int(y[3]) == tiny[19][1]
    assert len(BatchLoader(tiny, 16, drop_last=True)) == 3
    assert len(list(BatchLoader(tiny, 16, drop_last=True))) == 3


def test_loader_epochs_cover_all_and_reproduce(tiny: TensorImageDataset) -> None:
    subset = torch.arange(0, 50, 2)
    loader = BatchLoader(tiny, 7, indices=subset, shuffle=True, seed=5)
    orders = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        ys = torch.cat([y for _, y in loader])
        order = loader.epoch_indices()
        assert torch.equal(order.sort().values, subset)
        assert torch.equal(ys, tiny.labels[order])
        orders.append(order)
    assert not torch.equal(orders[0], orders[1])
    resumed = BatchLoader(tiny, 7, indices=subset, shuffle=True, seed=5)
    resumed.set_epoch(1)
    assert torch.equal(resumed.epoch_indices(), orders[1])


def test_loader_rank_shards(tiny: TensorImageDataset) -> None:
    shards = []
    for rank in range(3):
        loader = BatchLoader(tiny, 4, shuffle=True, rank=rank, world_size=3, seed=1)
        loader.set_epoch(2)
        shards.append(loader.epoch_indices())
        assert len(loader) == 4 and sum(len(y) for _, y in loader) == 16
    assert all(len(s) == 16 for s in shards)
    flat = torch.cat(shards)
    assert len(set(flat.tolist())) == 48
    with pytest.raises(ConfigError):
        BatchLoader(tiny, 4, rank=3, world_size=3)


def test_loader_augmentation(tiny: TensorImageDataset) -> None:
    plain = BatchLoader(tiny, 50)
    aug = BatchLoader(tiny, 50, augment=True, seed=0)
    (x0, y0), (x1, y1) = next(iter(plain)), next(iter(aug))
    assert x1.shape == x0.shape and torch.equal(y0, y1)
    assert not torch.equal(x0, x1)
    again = next(iter(BatchLoader(tiny, 50, augment=True, seed=0)))[0]
    assert torch.equal(x1, again)
    aug.set_epoch(1)
    assert not torch.equal(next(iter(aug))[0], x1)


def test_random_crop_flip_is_a_crop_or_flip() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (16, 2, 5, 6), dtype=torch.uint8)
    out = random_crop_flip(images, gen, padding=2)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for b in range(16):  # brute force over the 5*5*2 candidates of each sample
        candidates = [
            c
            for oy in range(5)
            for ox in range(5)
            for c in (padded[b, :, oy : oy + 5, ox : ox + 6],)
            for c in (c, c.flip(-1))
        ]
        assert any(torch.equal(out[b], c) for c in candidates)
    flips = random_crop_flip(images, torch.Generator().manual_seed(1), padding=0)
    n_flipped = sum(not torch.equal(flips[b], images[b]) for b in range(16))
    assert 0 < n_flipped < 16


def test_loader_over_generic_dataset() -> None:
    x = torch.randn(10, 1, 4, 4)
    ds = torch.utils.data.TensorDataset(x, torch.arange(10))
    batches = list(BatchLoader(ds, 4, indices=[9, 8, 7, 6, 5]))
    assert [len(y) for _, y in batches] == [4, 1]
    assert torch.equal(batches[0][0], x[[9, 8, 7, 6]]) and batches[1][1].tolist() == [5]
