"""Image folders as users have them (issue 17): native sizes, normalisation, the base check.

Every folder is written here with Pillow; expected pixels and accuracies are worked out by hand.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import snacs.modelfile
from snacs.cli import main
from snacs.data import TensorImageDataset, image_folder
from snacs.data.normalization import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    data_record,
    parse_stats,
    resolve_stats,
)
from snacs.errors import ConfigError, DataError
from snacs.validate import check_base_model, checkpoint_record

RNG = np.random.default_rng(0)


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _random_folder(root: Path, splits=("train", "test"), n=3, hw=(32, 32)) -> dict[Path, np.ndarray]:
    """PNG (lossless) random images; returns path -> pixels."""
    written = {}
    for split in splits:
        for cls in ("a", "b"):
            for i in range(n):
                arr = RNG.integers(0, 256, (*hw, 3), dtype=np.uint8)
                p = root / split / cls / f"{i}.png"
                _save(p, arr)
                written[p] = arr
    return written


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("opts", [{"image_size": 32}, {"crop": 32}, {"size": 32},
                                  {"resize": 32, "crop": 32}])
def test_native_size_images_are_bit_exact(tmp_path: Path, opts: dict) -> None:
    written = _random_folder(tmp_path, n=2)
    ds = image_folder("test", tmp_path, **opts)
    assert ds.image_shape == (3, 32, 32)
    for i, p in enumerate(ds.paths):
        assert torch.equal(ds.load_uint8(i), torch.from_numpy(written[p]).permute(2, 0, 1))
    # the in-memory copy holds the same bytes
    mem = ds.to_memory()
    assert torch.equal(mem.images[0], torch.from_numpy(written[ds.paths[0]]).permute(2, 0, 1))


def test_an_explicit_resize_applies_to_native_size_images(tmp_path: Path) -> None:
    written = _random_folder(tmp_path, n=1)
    arr = written[tmp_path / "test" / "a" / "0.png"]
    # the old --image-size 32 transform, now only on request: 32 -> 37, centre crop 32 at 2
    ds = image_folder("test", tmp_path, resize=37, crop=32)
    big = np.asarray(Image.fromarray(arr).resize((37, 37), Image.Resampling.BILINEAR))
    assert torch.equal(ds.load_uint8(0), torch.from_numpy(big[2:34, 2:34].copy()).permute(2, 0, 1))
    assert ds.preprocessing["transform"].startswith("every image whose shorter side is not 37")


def test_native_size_jpeg_matches_a_plain_decode(tmp_path: Path) -> None:
    arr = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    p = tmp_path / "test" / "a" / "x.jpg"
    p.parent.mkdir(parents=True)
    Image.fromarray(arr).save(p, quality=90)
    ref = np.array(Image.open(p).convert("RGB"))
    ds = image_folder("test", tmp_path, image_size=32)
    assert torch.equal(ds.load_uint8(0), torch.from_numpy(ref).permute(2, 0, 1))


def _blocks(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """An image of 2x2 constant blocks (values 10·k, all distinct) and the block grid."""
    grid = (np.arange((h // 2) * (w // 2)).reshape(h // 2, w // 2) * 10).astype(np.uint8)
    img = np.repeat(np.repeat(grid, 2, 0), 2, 1)
    return np.stack([img, img, img], -1), grid


def test_resize_and_crop_semantics_by_hand(tmp_path: Path) -> None:
    img, grid = _blocks(8, 12)  # h=8, w=12
    _save(tmp_path / "test" / "a" / "x.png", img)
    # shorter side 8 -> 4: the whole 8x12 image becomes 4 x round(12 * 4 / 8) = 4x6 (bilinear),
    # then the 4x4 centre crop takes columns (6 - 4) // 2 = 1 .. 4
    ds = image_folder("test", tmp_path, resize=4, crop=4)
    small = np.asarray(Image.fromarray(img).resize((6, 4), Image.Resampling.BILINEAR))
    assert torch.equal(ds.load_uint8(0), torch.from_numpy(small[:, 1:5].copy()).permute(2, 0, 1))
    assert not torch.equal(ds.load_uint8(0)[0], torch.from_numpy(grid[:, :4]))
    assert ds.preprocessing["resize"] == 4 and ds.preprocessing["crop"] == 4
    # image_size 8: shorter side already 8, so no resize; centre crop 8x8 = columns 2 .. 9
    ds = image_folder("test", tmp_path, image_size=8)
    assert torch.equal(ds.load_uint8(0)[0], torch.from_numpy(img[:, 2:10, 0]))
    # crop alone: the ImageNet ratio, resize round(7 / 0.875) = 8 -> no resize for h=8, crop 7
    ds = image_folder("test", tmp_path, crop=7)
    assert ds.preprocessing["resize"] == 8 and ds.image_shape == (3, 7, 7)
    assert torch.equal(ds.load_uint8(0)[0], torch.from_numpy(img[0:7, 2:9, 0]))
    # resize alone crops a square of that size; nothing given keeps 256 -> 224
    assert image_folder("test", tmp_path, resize=6).image_shape == (3, 6, 6)
    ds = image_folder("test", tmp_path)
    assert (ds.preprocessing["resize"], ds.preprocessing["crop"]) == (256, 224)
    assert "used as they are" in ds.preprocessing["transform"]


def test_size_option_errors(tmp_path: Path) -> None:
    _random_folder(tmp_path, n=1, hw=(8, 8))
    with pytest.raises(ConfigError, match="disagree"):
        image_folder("test", tmp_path, image_size=32, crop=28)
    with pytest.raises(ConfigError, match="at least crop"):
        image_folder("test", tmp_path, resize=20, crop=24)
    with pytest.raises(ConfigError, match="either size"):
        image_folder("test", tmp_path, size=8, image_size=8)


# ---------------------------------------------------------------- mean / std


def test_mean_std_presets_and_custom_values(tmp_path: Path) -> None:
    arr = np.zeros((4, 4, 3), np.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2] = 51, 102, 204  # 0.2, 0.4, 0.8
    _save(tmp_path / "test" / "a" / "x.png", arr)
    ds = image_folder("test", tmp_path, image_size=4)
    assert ds.mean == IMAGENET_MEAN and ds.std == IMAGENET_STD  # the default
    ds = image_folder("test", tmp_path, image_size=4, mean="cifar10", std="cifar10")
    assert ds.mean == CIFAR10_MEAN and ds.std == CIFAR10_STD
    x, _ = image_folder("test", tmp_path, image_size=4, mean="none", std="none")[0]
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([0.2, 0.4, 0.8]))
    x, _ = image_folder("test", tmp_path, image_size=4, mean=[0.5, 0.5, 0.5], std=0.25)[0]
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([-1.2, -0.4, 1.2]))
    assert ds.preprocessing["mean"] == list(CIFAR10_MEAN)
    with pytest.raises(ConfigError, match="2 values but the images have 3"):
        image_folder("test", tmp_path, image_size=4, mean=[0.5, 0.5])
    with pytest.raises(ConfigError, match="preset"):
        image_folder("test", tmp_path, image_size=4, mean="imagnet")
    with pytest.raises(ConfigError, match="positive"):
        image_folder("test", tmp_path, image_size=4, std=[1, 0, 1])


def test_stats_parsing_for_cli_and_yaml() -> None:
    assert parse_stats(["imagenet"]) == "imagenet" and parse_stats("CIFAR10") == "cifar10"
    assert parse_stats(["0.5", "0.25", "1"]) == (0.5, 0.25, 1.0)
    assert parse_stats("0.5,0.25,1") == (0.5, 0.25, 1.0)
    assert parse_stats([0.1, 0.2, 0.3]) == (0.1, 0.2, 0.3) and parse_stats(None) is None
    # one channel (Fashion-MNIST): numbers or "none"; the RGB presets do not apply
    assert resolve_stats("none", "none", 1, "fm", ((0.3,), (0.3,))) == ((0.0,), (1.0,))
    assert resolve_stats(0.5, None, 1, "fm", ((0.3,), (0.2,))) == ((0.5,), (0.2,))
    with pytest.raises(ConfigError, match="three-channel"):
        resolve_stats("imagenet", "imagenet", 1, "fm", ((0.3,), (0.3,)))


def test_tensor_datasets_take_presets_through_the_registry(tmp_path: Path) -> None:
    from snacs.data import get_dataset
    from snacs.data.fashion_mnist import fashion_mnist

    # Fashion-MNIST files as the loader reads them: IDX headers + bytes
    root = tmp_path / "fm"
    root.mkdir()
    imgs = RNG.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    for prefix in ("train", "t10k"):
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(
            bytes([0, 0, 8, 3]) + (4).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
            + imgs.tobytes())
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(
            bytes([0, 0, 8, 1]) + (4).to_bytes(4, "big") + bytes([0, 1, 2, 3]))
    ds = fashion_mnist("test", root, mean="none", std="none", channels=3)
    assert ds.mean == (0.0,) * 3 and ds.std == (1.0,) * 3
    ds = get_dataset("fashion-mnist", "test", root, channels=3, mean="imagenet", std="imagenet")
    assert ds.mean == IMAGENET_MEAN
    x, _ = fashion_mnist("test", root, pad_to=None, mean=0.5, std=0.5)[0]
    torch.testing.assert_close(x, torch.from_numpy(imgs[0]).float()[None] / 127.5 - 1.0)


# ---------------------------------------------------------------- folder variants


def test_val_and_test_stand_in_for_each_other(tmp_path: Path, caplog) -> None:
    _random_folder(tmp_path / "v", splits=("train", "val"), n=1, hw=(4, 4))
    _random_folder(tmp_path / "t", splits=("train", "test"), n=1, hw=(4, 4))
    with caplog.at_level(logging.INFO, logger="snacs.data.folder"):
        ds = image_folder("test", tmp_path / "v", image_size=4)
    assert ds.preprocessing["split"] == "val" and len(ds) == 2
    assert "using 'val' as the test split" in caplog.text
    assert image_folder("val", tmp_path / "t", image_size=4).preprocessing["split"] == "test"
    assert image_folder("train", tmp_path / "t", image_size=4).preprocessing["split"] == "train"


def test_single_folder_is_split_seeded_and_stratified(tmp_path: Path) -> None:
    for cls, n in (("a", 10), ("b", 5)):
        for i in range(n):
            _save(tmp_path / cls / f"{i}.png", RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    tr = image_folder("train", tmp_path, image_size=4)
    te = image_folder("test", tmp_path, image_size=4)
    # round(10 * 0.2) = 2 and round(5 * 0.2) = 1 held out per class
    assert torch.bincount(te.labels).tolist() == [2, 1]
    assert torch.bincount(tr.labels).tolist() == [8, 4]
    assert set(tr.paths).isdisjoint(te.paths) and len(set(tr.paths) | set(te.paths)) == 15
    assert te.preprocessing["holdout"] == {"fraction": 0.2, "seed": 0, "train": 12, "test": 3}
    assert tr.classes == te.classes == ["a", "b"]
    assert image_folder("test", tmp_path, image_size=4).paths == te.paths  # seeded
    other = image_folder("test", tmp_path, image_size=4, split_seed=1, holdout_fraction=0.4)
    assert torch.bincount(other.labels).tolist() == [4, 2]
    assert image_folder("val", tmp_path, image_size=4).paths == te.paths
    with pytest.raises(DataError, match="only has the splits 'train' and 'test'"):
        image_folder("extra", tmp_path, image_size=4)


def test_grey_rgba_palette_and_16bit_become_rgb(tmp_path: Path) -> None:
    d = tmp_path / "test" / "a"
    d.mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 100, np.uint8), "L").save(d / "0_grey.png")
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[...] = (10, 20, 30, 0)  # fully transparent: the colour is kept, alpha dropped
    Image.fromarray(rgba, "RGBA").save(d / "1_rgba.png")
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 200, 150, 100] + [0] * (256 * 3 - 6))
    pal.save(d / "2_palette.png")
    pal.info["transparency"] = 0
    pal.save(d / "3_palette_transparent.png", transparency=0)
    Image.fromarray(np.full((4, 4), 257 * 77, np.uint16)).save(d / "4_grey16.png")
    ds = image_folder("test", tmp_path, image_size=4)
    got = [ds.load_uint8(i)[:, 0, 0].tolist() for i in range(len(ds))]
    assert [p.name for p in ds.paths][0] == "0_grey.png"
    assert got == [[100] * 3, [10, 20, 30], [200, 150, 100], [200, 150, 100], [77] * 3]
    assert all(ds.load_uint8(i).shape == (3, 4, 4) for i in range(len(ds)))


def test_bad_files_are_named_or_skipped(tmp_path: Path, caplog) -> None:
    _random_folder(tmp_path, n=2, hw=(8, 8))
    d = tmp_path / "test" / "a"
    (d / "broken.jpg").write_bytes(b"<html>not found</html>")
    good = d / "0.png"
    raw = good.read_bytes()
    (d / "truncated.png").write_bytes(raw[: len(raw) // 2])
    (d / "notes.txt").write_text("labels were checked by hand")
    (d / ".DS_Store").write_bytes(b"\0\0")
    ds = image_folder("test", tmp_path, image_size=8)
    assert len(ds) == 6 and ds.preprocessing["ignored_files"] == 1  # notes.txt, not .DS_Store
    bad = [i for i, p in enumerate(ds.paths) if p.name == "broken.jpg"][0]
    with pytest.raises(DataError, match=r"broken\.jpg.*--skip-bad-images"):
        ds.load_uint8(bad)
    with pytest.raises(DataError, match=r"truncated\.png"):
        ds.load_uint8([p.name for p in ds.paths].index("truncated.png"))
    with pytest.raises(DataError, match=r"broken\.jpg"):
        ds.to_memory()
    with caplog.at_level(logging.WARNING):
        ok = image_folder("test", tmp_path, image_size=8, skip_bad_images=True)
    assert len(ok) == 4 and ok.preprocessing["skipped_bad_images"] == 2
    assert "broken.jpg" in caplog.text and "notes.txt" in caplog.text
    assert ok.to_memory().images.shape == (4, 3, 8, 8)


def test_nested_class_folders_are_refused(tmp_path: Path) -> None:
    _random_folder(tmp_path, n=1, hw=(4, 4))
    _save(tmp_path / "test" / "b" / "more" / "x.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"class folder .*test/b holds subfolders \(more\)"):
        image_folder("test", tmp_path, image_size=4)
    with pytest.raises(DataError, match=r"does not exist; it holds nothing"):
        (tmp_path / "empty" / "nothing").mkdir(parents=True)
        image_folder("train", tmp_path / "empty")


# ---------------------------------------------------------------- a model that depends on the data


def _brightness_folder(root: Path, n_train=24, n_test=16, flip=0.0) -> None:
    """Two classes told apart by brightness: 'bright' ~200, 'dark' ~60 (noise ±20).

    With ``flip``, that share of the test images of 'bright' are dark (a model right on the rest
    scores 100 - 50·flip %).
    """
    rng = np.random.default_rng(1)
    for split, n in (("train", n_train), ("test", n_test)):
        for cls, level in (("bright", 200), ("dark", 60)):
            for i in range(n):
                lv = 60 if (split == "test" and cls == "bright" and i < round(flip * n)) else level
                arr = np.clip(lv + rng.integers(-20, 21, (8, 8, 3)), 0, 255).astype(np.uint8)
                _save(root / split / cls / f"{i}.png", arr)


class MeanSign(nn.Module):
    """Logits (m, -m), m the mean of the normalised input: class 0 ('bright') when m > 0, so the
    model is right only when the data is centred between the two brightness levels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((1, 2, 3))
        return torch.stack([m, -m], 1)


def test_base_check_stops_on_wrong_normalisation_and_passes_on_the_right(tmp_path: Path) -> None:
    _brightness_folder(tmp_path)
    right = image_folder("test", tmp_path, image_size=8, mean=0.5, std=0.25)
    rec = check_base_model(MeanSign(), right)
    assert rec["passed"] and rec["accuracy"] == 100.0 and rec["samples"] == 32
    wrong = image_folder("test", tmp_path, image_size=8, mean="none", std="none")
    # every input is positive, so every image is called 'bright': 50 %, the chance level
    with pytest.raises(DataError) as err:
        check_base_model(MeanSign(), wrong)
    msg = str(err.value)
    assert "scores 50.0 % on 32 held-out images" in msg and "near chance (50.0 %" in msg
    for cause in ("normalisation", "image size", "class order", "channels", "--mean/--std",
                  "--image-size", "--classes", "--force"):
        assert cause in msg
    # the same images under the ImageNet preset are centred: the message names the fix
    assert "Most likely fix: --mean imagenet --std imagenet gives 100.0 %" in msg
    forced = check_base_model(MeanSign(), wrong, force=True)
    assert forced["forced"] and not forced["passed"] and forced["accuracy"] == 50.0
    assert forced["alternatives"]["--mean imagenet --std imagenet"] == 100.0


def test_base_check_against_an_expected_accuracy_and_class_order(tmp_path: Path) -> None:
    _brightness_folder(tmp_path, flip=0.5)  # 8 of 16 'bright' test images are dark: 75 %
    ds = image_folder("test", tmp_path, image_size=8, mean=0.5, std=0.25)
    assert check_base_model(MeanSign(), ds, expect_accuracy=90.0)["accuracy"] == 75.0
    with pytest.raises(DataError, match=r"75\.0 %.*far below the expected 96\.00 %"):
        check_base_model(MeanSign(), ds, expect_accuracy=96.0)
    rec = check_base_model(MeanSign(), ds, expect_accuracy=96.0, tolerance=25.0)
    assert rec["passed"]
    # class order: the checkpoint says dark is class 0
    swapped = image_folder("test", tmp_path, image_size=8, mean=0.5, std=0.25,
                           classes=["dark", "bright"])
    with pytest.raises(DataError, match=r"class order differs.*--classes bright,dark"):
        check_base_model(MeanSign(), swapped, expect_classes=["bright", "dark"])
    rec = check_base_model(MeanSign(), ds, expect_classes=["bright", "cloudy"])
    assert "only in the data: dark; only in the checkpoint: cloudy" in rec["classes"]


def test_checkpoint_record(tmp_path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "best_prec1": 93.62,
                "class_to_idx": {"dog": 1, "cat": 0}}, tmp_path / "a.th")
    assert checkpoint_record(tmp_path / "a.th") == {"accuracy": 93.62, "classes": ["cat", "dog"]}
    torch.save({"model": {"w": torch.zeros(1)}, "acc": 0.9}, tmp_path / "b.th")
    assert checkpoint_record(tmp_path / "b.th")["accuracy"] == pytest.approx(90.0)
    torch.save({"w": torch.zeros(1)}, tmp_path / "c.th")
    assert checkpoint_record(tmp_path / "c.th") == {"accuracy": None, "classes": None}


def test_prune_runs_the_base_check_before_any_pruning_work(tmp_path: Path, monkeypatch) -> None:
    import snacs
    from snacs.pruner import SNACS

    _brightness_folder(tmp_path)
    wrong = image_folder("test", tmp_path, image_size=8, mean="none", std="none")
    called = []
    monkeypatch.setattr(SNACS, "fit", lambda self, *a, **k: called.append(1) or self)
    with pytest.raises(DataError, match="base check failed"):
        snacs.prune(MeanSign(), wrong, eval_data=wrong, samples_per_class=5)
    assert called == []


# ---------------------------------------------------------------- the model file and the CLI


@pytest.fixture(scope="module")
def trained_on_folder(tmp_path_factory):
    """A simplecnn trained on the brightness folder with mean 0.5 / std 0.25, saved by snacs."""
    from snacs.models import create_model
    from snacs.train import TrainConfig, evaluate, train

    root = tmp_path_factory.mktemp("bright")
    _brightness_folder(root)
    tr = image_folder("train", root, image_size=8, mean=0.5, std=0.25, in_memory=True)
    te = image_folder("test", root, image_size=8, mean=0.5, std=0.25, in_memory=True)
    torch.manual_seed(0)
    model = create_model("simplecnn", num_classes=2, width=0.5)
    train(model, tr, TrainConfig(epochs=3, lr=0.05, batch_size=8, augment=False,
                                 val_fraction=0.1, seed=0))
    assert evaluate(model, te)["accuracy"] == 100.0
    wrong = TensorImageDataset(te.images, te.labels, te.classes, (0,) * 3, (1,) * 3)
    assert evaluate(model, wrong)["accuracy"] <= 60.0  # the premise of the base-check test
    path = root / "model.pt"
    snacs.modelfile.save(model, path, extra={"data": data_record(tr), "train": {"test_accuracy": 100.0}})
    return root, path


def test_the_model_file_carries_its_normalisation(trained_on_folder, tmp_path: Path) -> None:
    root, path = trained_on_folder
    stored = snacs.modelfile.saved_data(path)
    assert stored["mean"] == [0.5] * 3 and stored["std"] == [0.25] * 3
    assert stored["classes"] == ["bright", "dark"] and stored["image_shape"] == [3, 8, 8]
    assert stored["preprocessing"]["crop"] == 8
    model = snacs.modelfile.load(path)
    assert model.snacs_data["mean"] == [0.5] * 3
    snacs.modelfile.save(model, tmp_path / "again.pt")  # a reloaded model keeps it
    assert snacs.modelfile.saved_data(tmp_path / "again.pt")["std"] == [0.25] * 3
    assert snacs.modelfile.saved_data(tmp_path / "missing.pt") == {}


def _evaluate(argv, capsys) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_reuses_the_stored_normalisation_unless_told(trained_on_folder, capsys) -> None:
    root, path = trained_on_folder
    base = ["evaluate", "--checkpoint", str(path), "--dataset", "image-folder", "--data-root",
            str(root), "--no-progress"]
    res = _evaluate(base, capsys)  # mean/std and the 8x8 crop come from the model file
    assert res["data"]["mean"] == [0.5] * 3 and res["accuracy"] == 100.0
    assert res["data"]["image_shape"] == [3, 8, 8]
    res = _evaluate(base + ["--mean", "none", "--std", "none"], capsys)
    assert res["data"]["mean"] == [0.0] * 3 and res["accuracy"] <= 60.0
    res = _evaluate(base + ["--mean", "0.5", "0.5", "0.5", "--std", "imagenet"], capsys)
    assert res["data"]["std"] == list(IMAGENET_STD)


def test_cli_prune_stops_on_wrong_normalisation(trained_on_folder, tmp_path, capsys) -> None:
    root, path = trained_on_folder
    argv = ["prune", "--checkpoint", str(path), "--dataset", "image-folder", "--data-root",
            str(root), "--mean", "none", "--std", "none", "--samples-per-class", "5",
            "--grid-step", "25", "--no-latency", "--no-progress", "--out", str(tmp_path / "p")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("snacs: error: base check failed") and "--mean/--std" in err
    assert "Traceback" not in err and not (tmp_path / "p" / "model.pt").exists()
    # --force goes on and records the failed check in result.json and the report
    assert main(argv + ["--force", "--overwrite"]) == 0
    res = json.loads((tmp_path / "p" / "result.json").read_text())
    assert res["base_check"]["forced"] and res["data"]["mean"] == [0.0] * 3
    assert "pruned anyway (--force)" in (tmp_path / "p" / "report.md").read_text()
    assert snacs.modelfile.saved_data(tmp_path / "p" / "model.pt")["mean"] == [0.0] * 3


def test_cli_prune_expect_accuracy(trained_on_folder, tmp_path, capsys) -> None:
    root, path = trained_on_folder
    _brightness_folder(tmp_path / "half", flip=0.5)  # this model scores 75 % on it
    argv = ["prune", "--checkpoint", str(path), "--dataset", "image-folder", "--data-root",
            str(tmp_path / "half"), "--expect-accuracy", "99", "--no-progress",
            "--out", str(tmp_path / "p")]
    assert main(argv) == 2
    assert "far below the expected 99.00 %" in capsys.readouterr().err


# ---------------------------------------------------------------- the shared CIFAR-10 JPEG copy

CIFAR_JPEG = Path.home() / ".cache" / "snacs" / "data" / "cifar10-jpeg"
RESNET56 = Path("/work/shared/models/cifar10-resnet56-4bfd9763.th")
_real = pytest.mark.skipif(
    not ((CIFAR_JPEG / "test").is_dir() and RESNET56.is_file()),
    reason=f"needs the unpacked CIFAR-10 JPEG copy in {CIFAR_JPEG} and {RESNET56}")


@pytest.mark.slow
@_real
def test_real_cifar_jpeg_folder_at_native_size(capsys) -> None:
    res = _evaluate(["evaluate", "--model", "resnet56", "--checkpoint", str(RESNET56),
                     "--dataset", "image-folder", "--data-root", str(CIFAR_JPEG),
                     "--image-size", "32", "--no-progress"], capsys)
    assert res["samples"] == 10_000
    assert res["accuracy"] == pytest.approx(83.2, abs=0.1)  # the native-size accuracy


@pytest.mark.slow
@_real
def test_real_cifar_jpeg_wrong_normalisation_is_caught(tmp_path, capsys) -> None:
    argv = ["prune", "--model", "resnet56", "--checkpoint", str(RESNET56), "--dataset",
            "image-folder", "--data-root", str(CIFAR_JPEG), "--image-size", "32",
            "--mean", "none", "--std", "none", "--no-progress", "--out", str(tmp_path / "p")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "base check failed" in err and "far below the expected 93.62 %" in err
    assert "Most likely fix: --mean imagenet --std imagenet" in err


def test_yaml_mean_std(trained_on_folder, tmp_path, capsys) -> None:
    root, path = trained_on_folder
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  mean: [0.0, 0.0, 0.0]\n  std: none\n")
    res = _evaluate(["evaluate", "--checkpoint", str(path), "--dataset", "image-folder",
                     "--data-root", str(root), "--config", str(cfg), "--no-progress"], capsys)
    assert res["data"]["mean"] == [0.0] * 3 and res["data"]["std"] == [1.0] * 3
