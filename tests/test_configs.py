"""Every paper config loads and runs one short step on tiny generated data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snacs.cli import load_config_file, main

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_all_four_configs_exist():
    assert {c.name for c in CONFIGS} >= {"cifar10-vgg16.yaml", "cifar10-resnet56.yaml",
                                         "cifar10-mobilenetv2.yaml", "imagenet-resnet50.yaml"}


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda p: p.stem)
def test_config_runs_one_step(cfg, tmp_path, capsys):
    values = load_config_file(str(cfg))
    assert values["finetune_epochs"] > 0 and values["samples_per_class"] > 0
    out = tmp_path / "run"
    code = main(["prune", "--config", str(cfg), "--dataset", "synthetic", "--width", "0.25",
                 "--samples-per-class", "4", "--groups", "4", "--estimator", "gaussian",
                 "--finetune-epochs", "1", "--steps-per-epoch", "1", "--grid-step", "25", "--image-size", "32",
                 "--out", str(out), "--no-progress", "--no-latency"])
    err = capsys.readouterr().err
    assert code == 0, err
    res = json.loads((out / "result.json").read_text())
    assert res["settings"]["granularity"] == values["granularity"]
    assert res["finetune"]["config"]["weight_decay"] == values["weight_decay"]
    assert res["finetune"]["config"]["lr"] == values["lr"]


def test_unknown_config_key_is_rejected(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: vgg16\nprune:\n  granulrity: filter\n")
    code = main(["prune", "--config", str(bad), "--dataset", "synthetic", "--out",
                 str(tmp_path / "o")])
    assert code == 2 and "granulrity" in capsys.readouterr().err
