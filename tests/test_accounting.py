"""Accounting: what a plan predicts is what the pruned model really has.

For every registry model, both granularities and the `ul` and `target` modes, the plan's
predicted conv+linear weights and MACs (`plan.predicted`, from `snacs.plan.count_plan`) are
compared with counts taken on the pruned model by `snacs.metrics` (which runs a forward pass and
counts tensors), and the pruned model's parameter count with one derived in this file from the
plan's removed channel indices and the original tensors' shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from snacs.apply import export_slim
from snacs.data import synthetic
from snacs.limits import expand_groups
from snacs.metrics import (
    conv_linear_weights,
    count_macs,
    count_parameters,
    nonzero_conv_linear_weights,
)
from snacs.models import create_model, list_models
from snacs.plan import make_plan
from snacs.pruner import SNACS

FAST = dict(estimator="gaussian", samples_per_class=6, groups=8, limits=0.5, seed=0)
SLOW_MODELS = {"resnet50", "resnet110"}  # ImageNet net; 110 layers (resnet20-56 cover its structure)
MODELS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MODELS else n for n in list_models()]
MODELS.append("tiny-flatten")  # no registry model has a Linear reading a flattened H x W map


class TinyFlatten(nn.Module):
    """A residual addition and a Linear reading a flattened 2 x 2 map (4 columns per channel)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bnb = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(16 * 4, 24)
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(x + self.bnb(self.b(torch.relu(self.a(x)))))
        return self.fc2(torch.relu(self.fc1(self.pool(x).flatten(1))))


def _shape(name: str) -> tuple[int, int, int]:
    return (3, 64, 64) if name == "resnet50" else (3, 32, 32)


def _fitted(name: str, granularity: str) -> tuple[nn.Module, SNACS]:
    shape = _shape(name)
    torch.manual_seed(0)
    if name == "tiny-flatten":
        model = TinyFlatten().eval()
    else:
        model = create_model(name, width=1.0 if name == "simplecnn" else 0.25).eval()
    data = synthetic("train", n_per_class=8, shape=shape, seed=1)
    opts = FAST if granularity == "filter" else FAST | {"limits": 0.8}
    return model, SNACS(granularity=granularity, **opts).fit(model, data)


def _with_target(model: nn.Module, p: SNACS, target: float) -> None:
    """Re-plan a fitted pruner for a target share of weights (what fit does in mode target)."""
    p.plan_ = make_plan(model, p.topology_, p.scores_, p.limits_, p.sensitivity_,
                        granularity=p.granularity, mode="target", target=target,
                        target_metric="params", groups=p.groups)


def expected_parameters(model: nn.Module, topology, remove: dict[int, list[int]]) -> int:
    """Parameters left after removing `remove`'s channels, from the original shapes.

    Every removed channel takes away: one output slice (weight row, bias entry) of each producer
    and depthwise conv, one input slice of each reader (H*W columns of a Linear reading a
    flatten), and one entry of each BatchNorm's weight and bias.
    """
    out_cut: dict[str, int] = {}
    in_cut: dict[str, int] = {}
    feat_cut: dict[str, int] = {}
    spatial = {p.child: p.spatial for p in topology.pairs}
    for gid, idx in remove.items():
        cg, k = topology.groups[gid], len(idx)
        for n in cg.producers + cg.depthwise:
            out_cut[n] = out_cut.get(n, 0) + k
        for n in cg.consumers:
            in_cut[n] = in_cut.get(n, 0) + k * spatial.get(n, 1)
        for n in cg.norms:
            feat_cut[n] = feat_cut.get(n, 0) + k
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            out = m.out_channels - out_cut.get(name, 0)
            if m.groups > 1:  # depthwise: one input per output
                per_in = m.in_channels // m.groups
            else:
                per_in = m.in_channels - in_cut.get(name, 0)
            total += out * per_in * m.kernel_size[0] * m.kernel_size[1]
            total += out if m.bias is not None else 0
        elif isinstance(m, nn.Linear):
            out = m.out_features - out_cut.get(name, 0)
            total += out * (m.in_features - in_cut.get(name, 0)) + (out if m.bias is not None else 0)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            total += 2 * (m.num_features - feat_cut.get(name, 0))
        else:
            total += sum(p.numel() for p in m.parameters(recurse=False))
    return total


@pytest.mark.parametrize("mode", ["ul", "target"])
@pytest.mark.parametrize("name", MODELS)
def test_filter_plan_predicts_the_slimmed_model(name: str, mode: str) -> None:
    model, p = _fitted(name, "filter")
    if mode == "target":
        _with_target(model, p, 0.3)
    pred = p.plan_.predicted
    assert p.plan_.remove, "the plan must remove something for the check to mean anything"
    pruned = p.apply(model)
    shape = _shape(name)
    assert pred["weights_before"] == conv_linear_weights(model)
    assert pred["macs_before"] == count_macs(model, shape)
    assert pred["weights_after"] == conv_linear_weights(pruned)
    assert pred["macs_after"] == count_macs(pruned, shape)
    assert count_parameters(pruned) == expected_parameters(model, p.topology_, p.plan_.remove)
    assert count_parameters(pruned) < count_parameters(model)
    if mode == "target":
        assert 0.3 <= pred["weights_removed"] < 0.45
    # every removed channel is gone from each producer
    mods = dict(pruned.named_modules())
    for gid, idx in p.plan_.remove.items():
        cg = p.topology_.groups[gid]
        for n in cg.producers:
            m = mods[n]
            out = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            assert out == cg.channels - len(idx), n


@pytest.mark.parametrize("mode", ["ul", "target"])
@pytest.mark.parametrize("name", MODELS)
def test_connection_plan_predicts_the_masked_model(name: str, mode: str) -> None:
    model, p = _fitted(name, "connection")
    if mode == "target":
        _with_target(model, p, 0.3)
    pred = p.plan_.predicted
    pruned = p.apply(model)
    shape = _shape(name)
    # independent count: the kept (child, parent) connections of each pair times the weights
    # of one connection (kernel positions, or the H*W columns of a Linear after a flatten)
    mods = dict(model.named_modules())
    removed_w = removed_macs = 0
    for pair in p.topology_.pairs:
        keep = expand_groups(np.asarray(p.plan_.keep[pair.name], dtype=bool), pair.n_child, pair.n_parent)
        w = mods[pair.child].weight
        per_conn = w[0, 0].numel() if w.dim() == 4 else pair.spatial
        removed_w += int((~keep).sum()) * per_conn
        removed_macs += int((~keep).sum()) * per_conn * p.topology_.out_positions[pair.child]
    assert removed_w > 0
    assert pred["weights_after"] == conv_linear_weights(model) - removed_w
    assert pred["weights_after"] == nonzero_conv_linear_weights(pruned)
    assert pred["macs_after"] == count_macs(model, shape) - removed_macs
    assert pred["macs_after"] == count_macs(pruned, shape, sparse=True)
    assert count_parameters(pruned) == count_parameters(model)  # masks keep the dense tensors
    if mode == "target":
        assert 0.3 <= pred["weights_removed"] < 0.45
    # the physically slimmed export holds no more non-zero weights than the plan predicts and
    # exactly as many parameters as its own tensors say
    slim = export_slim(pruned, shape)
    assert nonzero_conv_linear_weights(slim) <= pred["weights_after"]
    assert count_macs(slim, shape, sparse=True) <= pred["macs_after"]
    assert count_parameters(slim) <= count_parameters(model)
