"""Removal is exact: a model with channels masked to zero and the model with those channels
physically removed by snacs (snacs.apply) give the same outputs, on residual streams, option-A
(zero-padding) shortcuts and depthwise groups.

The masked reference is built here by hand: a removed channel's producer rows, biases and every
BatchNorm affine entry on its path are zeroed (in eval mode a channel is then exactly 0 wherever
it is read), so nothing of snacs's own removal code is used to make the expected output.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from snacs.apply import apply_plan, export_slim, remove_channels
from snacs.models import PadShortcut, create_model
from snacs.pairs import find_topology
from snacs.plan import Plan
from snacs.scores import n_groups

TOL = 1e-5


from nets import TinyResidual  # noqa: E402  (shared test network)


def _model(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    torch.manual_seed(0)
    if name == "tiny-residual":
        model = TinyResidual()
    else:
        model = create_model(name, width=1.0 if name == "simplecnn" else 0.25)
    with torch.no_grad():  # BN statistics and affine far from the defaults: offsets matter
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    shape = (3, 64, 64) if name == "resnet50" else (3, 32, 32)
    return model.eval(), shape


def _x(shape, n: int = 3) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(1))


def _is_option_a(cg, modules) -> bool:
    return any(isinstance(modules[o], PadShortcut) for o in cg.others)


def masked_reference(model: nn.Module, topology, remove: dict[int, list[int]]) -> nn.Module:
    """A copy in which every removed channel is exactly zero wherever it is read."""
    ref = copy.deepcopy(model)
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for gid, idx in remove.items():
            cg = topology.groups[gid]
            for n in cg.producers + cg.depthwise:
                m = modules[n]
                m.weight[idx] = 0
                if m.bias is not None:
                    m.bias[idx] = 0
            for n in cg.norms:
                modules[n].weight[idx] = 0
                modules[n].bias[idx] = 0
            for n in cg.others:  # an option-A shortcut writing into the group copies channels
                m = modules[n]   # of the previous stage into some of them: zero its output too
                if isinstance(m, PadShortcut) and m.out_channels == cg.channels:
                    m.register_forward_hook(lambda mod, inp, out, idx=list(idx): out.index_fill(
                        1, torch.tensor(idx), 0.0))
    return ref


def _removal(topology, *, per_group: int = 2) -> dict[int, list[int]]:
    """A few scattered channels from every prunable group that has readers."""
    out = {}
    for cg in topology.groups:
        if cg.prunable and cg.consumers and cg.channels > per_group:
            step = max(1, cg.channels // per_group)
            out[cg.id] = sorted({(1 + i * step) % cg.channels for i in range(per_group)})
    return out


CASES = [
    # (model, kinds of group that must be among the removed ones)
    ("tiny-residual", {"residual"}),
    ("resnet20", {"residual", "option-a"}),
    ("mobilenetv2", {"residual", "depthwise"}),
    ("vgg16", set()),
    ("simplecnn", set()),
    pytest.param("resnet50", {"residual"}, marks=pytest.mark.slow),
]


def _kinds(topology, model, gids) -> set[str]:
    modules = dict(model.named_modules())
    kinds = set()
    for gid in gids:
        cg = topology.groups[gid]
        if cg.residual:
            kinds.add("residual")
        if cg.depthwise:
            kinds.add("depthwise")
        if _is_option_a(cg, modules):
            kinds.add("option-a")
    return kinds


@pytest.mark.parametrize(("name", "kinds"), CASES)
def test_filter_removal_equals_masking(name: str, kinds: set[str]) -> None:
    model, shape = _model(name)
    topo = find_topology(model, shape)
    remove = _removal(topo)
    assert kinds <= _kinds(topo, model, remove)
    x = _x(shape)
    with torch.no_grad():
        expected = masked_reference(model, topo, remove)(x)
        assert (expected - model(x)).abs().max() > 1e-3  # the masking changes the output
    plan = Plan(granularity="filter", mode="ul", remove=remove)
    slim = apply_plan(model, topo, plan).eval()
    with torch.no_grad():
        got = slim(x)
    assert (got - expected).abs().max().item() <= TOL * max(1.0, expected.abs().max().item())
    # channels are really gone, and the input model is untouched
    modules = dict(slim.named_modules())
    for gid, idx in remove.items():
        for n in topo.groups[gid].producers:
            m = modules[n]
            width = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            assert width == topo.groups[gid].channels - len(idx), n
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_removing_one_kind_of_group_alone(name: str) -> None:
    """Each kind on its own, so a coupling mistake in one kind cannot hide behind the others."""
    model, shape = _model(name)
    topo = find_topology(model, shape)
    x = _x(shape)
    for kind in ("residual", "option-a", "depthwise"):
        remove = {g: idx for g, idx in _removal(topo, per_group=3).items()
                  if kind in _kinds(topo, model, [g])}
        if not remove:
            continue
        with torch.no_grad():
            expected = masked_reference(model, topo, remove)(x)
        slim = copy.deepcopy(model)
        remove_channels(slim, topo, remove)
        with torch.no_grad():
            got = slim.eval()(x)
        assert (got - expected).abs().max().item() <= TOL * max(1.0, expected.abs().max().item()), kind


def _connection_plan(topology, groups: int, dead_rows: bool) -> Plan:
    """Every reader drops parent group 0 (those channels are unread); optionally child group 1
    loses all its inputs (dead filters that the exporter must silence and remove)."""
    keep = {}
    for p in topology.pairs:
        k = np.ones((n_groups(p.n_child, groups), n_groups(p.n_parent, groups)), dtype=bool)
        if topology.groups[p.group].prunable:
            k[:, 0] = False
        if dead_rows and not p.is_classifier and k.shape[0] > 2:
            k[1, :] = False
        keep[p.name] = k.tolist()
    return Plan(granularity="connection", mode="ul", keep=keep)


@pytest.mark.parametrize("name", ["tiny-residual", "resnet20", "mobilenetv2", "vgg16"])
@pytest.mark.parametrize("dead_rows", [False, True], ids=["unread", "dead"])
def test_connection_masks_equal_the_slimmed_export(name: str, dead_rows: bool) -> None:
    model, shape = _model(name)
    topo = find_topology(model, shape)
    masked = apply_plan(model, topo, _connection_plan(topo, 8, dead_rows)).eval()
    slim = export_slim(masked, shape).eval()
    x = _x(shape)
    with torch.no_grad():
        expected = masked(x)
        got = slim(x)
        assert (expected - model(x)).abs().max() > 1e-3
    assert (got - expected).abs().max().item() <= TOL * max(1.0, expected.abs().max().item())
    # the export removed exactly the channels the plan disconnects: parent group 0 of every
    # group whose readers are all layers (not read by an option-A shortcut), plus child group 1
    # of a single producer whose inputs were all cut (a dead filter, silenced by apply_plan)
    from snacs.estimators import make_groups

    slim_mods = dict(slim.named_modules())
    child_pair = {p.child: p for p in topo.pairs}
    shrunk = set()
    for cg in topo.groups:
        if not cg.prunable:
            continue
        gone: set[int] = set()
        if not cg.others:
            gone |= set(make_groups(cg.channels, n_groups(cg.channels, 8))[0].tolist())
        prod = child_pair.get(cg.producers[0])
        if dead_rows and len(cg.producers) == 1 and prod is not None and not prod.is_classifier \
                and n_groups(prod.n_child, 8) > 2:
            gone |= set(make_groups(prod.n_child, n_groups(prod.n_child, 8))[1].tolist())
        m = slim_mods[cg.producers[0]]
        width = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
        assert width == cg.channels - min(len(gone), cg.channels - 1), (cg.producers, sorted(gone))
        if gone:
            shrunk.add(cg.id)
    kinds = _kinds(topo, model, shrunk)
    if name in ("tiny-residual", "mobilenetv2"):
        assert "residual" in kinds  # every reader drops them: removable even when coupled
    if name == "mobilenetv2":
        assert "depthwise" in kinds
