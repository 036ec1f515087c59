"""Every paper config runs its own data path, on tiny data written by the test: the CIFAR-10
configs read a small `cifar-10-batches-py` in the official pickle layout, the ImageNet config an
image folder of PNGs. The dataset, model and settings come from the config itself."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from snacs.cli import load_config_file, main

ROOT = Path(__file__).parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_all_four_configs_exist():
    assert {c.name for c in CONFIGS} >= {"cifar10-vgg16.yaml", "cifar10-resnet56.yaml",
                                         "cifar10-mobilenetv2.yaml", "imagenet-resnet50.yaml"}


def write_cifar(root: Path, per_class: int = 5, seed: int = 0) -> Path:
    """A CIFAR-10 directory in the official layout (bytes keys, N x 3072 uint8 rows)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(name: str, n_per_class: int) -> None:
        labels = np.repeat(np.arange(10), n_per_class)
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        data[:, :1024] = (labels * 25)[:, None]  # the red plane tells the class
        with (folder / name).open("wb") as fh:
            pickle.dump({b"data": data, b"labels": labels.tolist(), b"batch_label": name.encode()}, fh)

    for i in range(1, 6):
        batch(f"data_batch_{i}", per_class)
    batch("test_batch", 2)
    with (folder / "batches.meta").open("wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    return root


def write_image_folder(root: Path, classes: int = 3, per_class: int = 6, seed: int = 0) -> Path:
    """root/{train,test}/<class>/*.png, the layout `--dataset image-folder` opens."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", 2)):
        for c in range(classes):
            d = root / split / f"n0{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
                img[..., c] = 255
                Image.fromarray(img).save(d / f"img{i}.png")
    return root


FAST = ["--width", "0.25", "--samples-per-class", "4", "--groups", "4", "--estimator", "gaussian",
        "--finetune-epochs", "1", "--steps-per-epoch", "1", "--grid-step", "25",
        "--no-progress", "--no-latency"]


# With the config's own model every case takes 15-35 s on 2 loaded cores (ResNet-56,
# MobileNetV2 and ResNet-50 have 50+ pairs, one score plot each): those runs are `slow`. The
# default suite runs every config's data path and settings with the small test CNN.
CASES = [pytest.param(c, "simplecnn", id=f"{c.stem}-simplecnn") for c in CONFIGS] + [
    pytest.param(c, None, id=c.stem, marks=pytest.mark.slow) for c in CONFIGS]


@pytest.mark.parametrize(("cfg", "model"), CASES)
def test_config_runs_its_data_path(cfg, model, tmp_path, capsys):
    values = load_config_file(str(cfg))
    assert values["finetune_epochs"] > 0 and values["samples_per_class"] > 0
    data = tmp_path / "data"
    if values["dataset"] == "cifar10":
        write_cifar(data)
        n_classes, n_test, extra = 10, 20, []
    else:
        assert values["dataset"] == "image-folder"
        write_image_folder(data)
        n_classes, n_test, extra = 3, 6, ["--image-size", "32"]
    if model is not None:
        extra += ["--model", model]
    out = tmp_path / "run"
    code = main(["prune", "--config", str(cfg), "--data-root", str(data), *FAST, *extra,
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    res = json.loads((out / "result.json").read_text())
    for key in ("granularity", "mode", "phi", "limits", "sensitivity"):
        assert res["settings"][key] == values[key], key
    assert res["samples"] == 4 * n_classes  # class-balanced calibration from the train split
    for key in ("weight_decay", "lr", "schedule", "batch_size"):
        assert res["finetune"]["config"][key] == values[key], key
    # accuracies on the written test split: multiples of 100 / n_test
    for k in ("accuracy_before", "accuracy_pruned", "accuracy_finetuned"):
        step = 100.0 / n_test
        assert 0.0 <= res[k] <= 100.0 and res[k] / step == pytest.approx(round(res[k] / step)), k
    import snacs

    slim = snacs.load(out / "model.pt")
    assert slim.snacs_spec["name"] == (model or values["model"])
    assert slim.snacs_spec["num_classes"] == n_classes  # from the data the config names


def test_imagenet_config_and_readme_name_the_split_folder_the_cli_opens():
    """`snacs prune` reads <root>/train and <root>/test (cli_prune.py builds the "test" split);
    the config's and the README's data comments must say the same."""
    cli = (ROOT / "src" / "snacs" / "cli_prune.py").read_text()
    assert re.search(r'build_dataset\(args\.dataset, "test"', cli)
    text = (ROOT / "configs" / "imagenet-resnet50.yaml").read_text()
    assert "train/<class>" in text and "test/<class>" in text
    assert not re.search(r"(?<![\w-])val/<class>", text)
    readme = (ROOT / "README.md").read_text()
    assert "ROOT/train/<class>" in readme and "ROOT/test/<class>" in readme


def test_unknown_config_key_is_rejected(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: vgg16\nprune:\n  granulrity: filter\n")
    code = main(["prune", "--config", str(bad), "--dataset", "synthetic", "--out",
                 str(tmp_path / "o")])
    assert code == 2 and "granulrity" in capsys.readouterr().err


def test_config_selects_the_hash_estimator(tmp_path, capsys):
    """`estimator: hash` in a config's prune section reaches the pruner (issue 14: the hash CMI
    is in the CLI and the configs)."""
    cfg = tmp_path / "hash.yaml"
    cfg.write_text("model: simplecnn\ndataset: synthetic\nprune:\n  estimator: hash\n"
                   "  granularity: filter\n  mode: ul\n")
    assert load_config_file(str(cfg))["estimator"] == "hash"
    fast = [a for a in FAST if a not in ("--estimator", "gaussian")]
    out = tmp_path / "run"
    code = main(["prune", "--config", str(cfg), *fast, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    res = json.loads((out / "result.json").read_text())
    assert res["settings"]["estimator"] == "hash"
