"""`snacs.save` / `snacs.load`: round trips of pruned models, without touching the caller's model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import snacs
from snacs.data import synthetic
from snacs.models import create_model

FAST = dict(estimator="gaussian", samples_per_class=6, groups=8, grid_step=10,
            measure_latency=False)
# connection pruning hard enough that whole filters lose every input: silencing them adds
# bias masks to the conv/BN biases (the case the old save got wrong)
PRUNE_OPTS = {"filter": {"limits": 0.5},
              "connection": {"limits": "none", "mode": "global", "q": 0.95}}
BIG = {"resnet50", "resnet110"}  # several seconds each: behind `slow`


def _shape(name: str) -> tuple[int, int, int]:
    return (3, 64, 64) if name == "resnet50" else (3, 32, 32)


def _masks(model: nn.Module) -> set[str]:
    return {f"{n}.{b}" for n, m in model.named_modules() for b, _ in m.named_buffers(recurse=False)
            if b.endswith("_mask")}


def _round_trip(name: str, granularity: str, tmp_path) -> None:
    shape = _shape(name)
    data = synthetic("train", n_per_class=12, shape=shape, seed=1)
    width = 0.5 if name == "simplecnn" else 0.25
    torch.manual_seed(0)
    model = create_model(name, width=width).eval()
    with torch.no_grad():  # non-trivial BN so a wrongly kept or dropped bias shows in the outputs
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.bias.uniform_(-0.2, 0.2)
    pruned, _ = snacs.prune(model, data, granularity=granularity,
                            **(FAST | PRUNE_OPTS[granularity]))
    pruned.eval()
    masks = _masks(pruned)
    if granularity == "connection":
        assert any(k.endswith("bias_mask") for k in masks), "no filter was silenced"
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = pruned(x)
    snacs.save(pruned, tmp_path / "m.pt")
    # the caller's model is untouched: same masks, same outputs
    assert _masks(pruned) == masks
    with torch.no_grad():
        assert torch.equal(pruned(x), ref)
    again = snacs.load(tmp_path / "m.pt")
    assert not _masks(again)
    with torch.no_grad():
        diff = (again(x) - ref).abs().max().item()
    print(f"{name} {granularity}: max abs diff after save/load {diff:.2e}")
    assert diff <= 1e-5


@pytest.mark.parametrize("granularity", ["filter", "connection"])
@pytest.mark.parametrize("name", [n for n in snacs.list_models() if n not in BIG])
def test_save_load_reproduces_outputs(name, granularity, tmp_path):
    _round_trip(name, granularity, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("granularity", ["filter", "connection"])
@pytest.mark.parametrize("name", sorted(BIG))
def test_save_load_reproduces_outputs_big_models(name, granularity, tmp_path):
    _round_trip(name, granularity, tmp_path)
