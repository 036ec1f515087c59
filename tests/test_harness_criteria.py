"""HRank and CHIP importances against their definitions, the dense row, BN recalibration in the
harness, and the cosine-step schedule."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import baselines as B  # noqa: E402

SHAPE = (3, 8, 8)


class Probe(nn.Module):
    """conv -> ReLU -> conv -> pool -> linear; the second conv reads the first's ReLU map."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 5, 3, padding=1)
        self.c2 = nn.Conv2d(5, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def probe():
    from snacs.data import synthetic
    from snacs.pairs import find_topology

    torch.manual_seed(0)
    model = Probe().eval()
    with torch.no_grad():  # channel 2 of c1 dead after ReLU: rank 0, no nuclear-norm share
        model.c1.weight[2] = 0
        model.c1.bias[2] = -1
    data = synthetic("train", n_per_class=6, shape=SHAPE, seed=0, num_classes=3)
    return model, find_topology(model, SHAPE), data


def _c1_maps(model, data, idx):
    x, _ = data.get_batch(idx)
    with torch.no_grad():
        return torch.relu(model.c1(x)).double()


def _group_of(topo, producer):
    return next(g.id for g in topo.groups if producer in g.producers)


def test_hrank_is_mean_matrix_rank(probe):
    from snacs.data import class_balanced_indices

    model, topo, data = probe
    imp = B.feature_map_importance(model, topo, data, "hrank", seed=3, per_class=4, batch=5)
    idx = class_balanced_indices(data.labels, 4, seed=3, num_classes=3)
    maps = _c1_maps(model, data, idx)
    ref = np.array([[np.linalg.matrix_rank(maps[n, c].numpy()) for c in range(5)]
                    for n in range(len(idx))]).mean(0)
    got = imp[_group_of(topo, "c1")]
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert got[2] == 0 and got.max() > 1


def test_chip_is_nuclear_norm_drop(probe):
    from snacs.data import class_balanced_indices

    model, topo, data = probe
    imp = B.feature_map_importance(model, topo, data, "chip", seed=1, per_class=3, batch=4)
    idx = class_balanced_indices(data.labels, 3, seed=1, num_classes=3)
    maps = _c1_maps(model, data, idx).flatten(2).numpy()  # N x C x HW
    ref = np.zeros(5)
    for a in maps:
        full = np.linalg.svd(a, compute_uv=False).sum()
        for c in range(5):
            b = a.copy()
            b[c] = 0
            ref[c] += full - np.linalg.svd(b, compute_uv=False).sum()
    ref /= len(maps)
    got = imp[_group_of(topo, "c1")]
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    assert abs(got[2]) < 1e-6 and got.max() > 0


@pytest.mark.parametrize("c,s", [(5, 9), (9, 4), (6, 6)], ids=["C<S", "C>S", "C=S"])
@pytest.mark.parametrize("chunk", [1 << 24, 7], ids=["one-chunk", "chunked"])
def test_chip_drop_both_gram_sides_equal_the_svd_definition(c, s, chunk, monkeypatch):
    """The S x S side (deep layers: more channels than map positions) and chunking over the
    channels give the definition's nuclear-norm drops, a dead channel's drop is 0."""
    monkeypatch.setattr(B, "CHIP_CHUNK", chunk)
    g = torch.Generator().manual_seed(c * 10 + s)
    x = torch.randn(3, c, s, generator=g, dtype=torch.float64)
    x[:, 1] = 0.0
    ref = np.zeros(c)
    for a in x.numpy():
        full = np.linalg.svd(a, compute_uv=False).sum()
        for k in range(c):
            b = a.copy()
            b[k] = 0
            ref[k] += full - np.linalg.svd(b, compute_uv=False).sum()
    got = B.chip_drop(x).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-7)
    assert abs(got[1]) < 1e-7 and (np.delete(got, 1) > 0).all()


def test_dense_row_removes_nothing(probe):
    model, topo, data = probe
    remove, pred = B.select_from_state("dense", B.score_method("dense", model, topo, data, seed=0),
                                       model, topo, target=None)
    assert remove == {} and pred["weights_removed"] == 0 and pred["macs_removed"] == 0


def test_harness_recalibrates_and_runs_new_methods(tmp_path):
    from benchmarks import compare as C

    import snacs
    from snacs.data import synthetic

    torch.manual_seed(0)
    model = snacs.create_model("simplecnn").eval()
    shape = (3, 16, 16)
    train = synthetic("train", n_per_class=12, shape=shape, seed=0)
    test = synthetic("test", n_per_class=5, shape=shape, seed=0)
    suite = C.Suite("tinybn", "simplecnn", 1.0, "synthetic", recalibrate_bn=True,
                    snacs_params={"samples_per_class": 6},
                    finetune={**C.CIFAR_FINETUNE, "batch_size": 16}, finetune_per_class=None,
                    budgets=(("macs", 0.4), ("params", 0.4)))
    h = C.Harness(suite, results_dir=tmp_path / "res", runs=tmp_path / "runs",
                  data=(train, test, model), latency={"bs1": {"batch_size": 1, "repeats": 1}})
    cells = C.grid(("dense", "hrank", "chip"), ("params", "macs"), (0.4,), (0,),
                   pairs=suite.budgets)
    assert [c["id"] for c in cells] == ["dense__none__seed0", "hrank__macs40__seed0",
                                        "chip__macs40__seed0", "hrank__params40__seed0",
                                        "chip__params40__seed0"]
    h.run(cells)
    res = json.loads((tmp_path / "res" / "compare_tinybn.json").read_text())
    assert res["recalibrate_bn"]["samples_per_class"] == 6
    assert "whole training split" in res["finetune"]["description"]
    dense = res["cells"]["dense__none__seed0"]
    assert dense["status"] == "ok", dense
    assert dense["weights_removed_pct"] == 0 and dense["macs_after"] == dense["macs_before"]
    assert dense["recalibrate_seconds"] > 0
    for cid in ("hrank__macs40__seed0", "chip__params40__seed0"):
        c = res["cells"][cid]
        assert c["status"] == "ok", c
        key = "macs_removed_pct" if "macs" in cid else "weights_removed_pct"
        assert 40.0 <= c[key] < 60.0
        assert 0.0 <= c["accuracy_finetuned"] <= 100.0


def test_cosine_step_schedule_reaches_zero():
    from snacs.train import TrainConfig, lr_at

    cfg = TrainConfig(epochs=1, lr=0.01, schedule="cosine-step")
    assert lr_at(cfg, 0) == pytest.approx(0.01)
    assert lr_at(cfg, 0.5) == pytest.approx(0.005)
    assert lr_at(cfg, 0.999) < 1e-7


@pytest.mark.slow
def test_every_cifar_method_runs_on_mobilenetv2(tmp_path):
    """The MobileNetV2 suite's methods on a small MobileNetV2 (depthwise and residual groups)
    through the harness, before a base trained for hours meets them: every cell ends `ok`, at
    the MAC budget within the harness's tolerance."""
    from benchmarks import compare as C

    import snacs
    from snacs.data import synthetic

    torch.manual_seed(0)
    model = snacs.create_model("mobilenetv2", width=0.25).eval()
    shape = (3, 32, 32)
    train = synthetic("train", n_per_class=10, shape=shape, seed=0)
    test = synthetic("test", n_per_class=4, shape=shape, seed=0)
    suite = C.Suite("tinymbv2", "mobilenetv2", 0.25, "synthetic", recalibrate_bn=True,
                    methods=C.CIFAR_METHODS + ("snacs-select",),
                    snacs_params={"samples_per_class": 10},
                    finetune={**C.CIFAR_FINETUNE, "batch_size": 25}, finetune_per_class=None,
                    budgets=(("macs", 0.5),))
    h = C.Harness(suite, results_dir=tmp_path / "res", runs=tmp_path / "runs",
                  data=(train, test, model), latency={"bs1": {"batch_size": 1, "repeats": 1}})
    cells = C.grid(suite.methods, ("macs",), (0.5,), (0,), pairs=suite.budgets)
    assert {c["method"] for c in cells} == set(suite.methods)
    h.run(cells)
    res = json.loads((tmp_path / "res" / "compare_tinymbv2.json").read_text())
    for c in cells:
        cell = res["cells"][c["id"]]
        assert cell["status"] == "ok", (c["id"], cell)
        assert 0.0 <= cell["accuracy_finetuned"] <= 100.0
        if c["metric"] == "macs":
            assert cell["macs_removed_pct"] >= 49.5, (c["id"], cell["macs_removed_pct"])
            assert cell["macs_after"] < cell["macs_before"]
