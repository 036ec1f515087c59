"""Every structure of the zoo prunes, exactly: concatenation (Inception, dense, DLA), grouped
convolutions (ResNeXt), squeeze-and-excitation, channel shuffle, channel split, an EfficientNet
MBConv with SE (and a layer forward never runs), a depthwise-separable stack with an MLP head, and
one network mixing them all (also through the CLI).

For each block and granularity: forward and backward run; filter removal equals the unpruned
model with the removed channels zeroed where every consumer reads them (the reference is built by
hooks, not by torch-pruning); connection masks equal the exported slim model; the plan's
predicted weights and MACs equal the counts of the real pruned model; a save/load round trip
gives the same outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.zoo_blocks import BLOCKS, build  # noqa: E402

import snacs  # noqa: E402
from snacs.apply import export_slim  # noqa: E402
from snacs.metrics import conv_linear_weights, count_macs, nonzero_conv_linear_weights  # noqa: E402

SHAPE = (3, 12, 12)
STRUCTURES = [n for n in BLOCKS if n != "mixed"]
OPTS = dict(limits=0.5, groups=4, estimator="gaussian", measure_latency=False,
            recalibrate_bn=False, sensitivity="none")


def _data(n_per_class: int = 8, classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat(n_per_class)
    x = torch.randn(len(y), *SHAPE, generator=g) + y[:, None, None, None].float() * 0.3
    return x, y


def _masked_reference(model: nn.Module, topology, remove: dict[int, list[int]]) -> nn.Module:
    """The unpruned model with each removed channel zeroed at every layer that reads it."""
    import copy

    ref = copy.deepcopy(model)
    modules = dict(ref.named_modules())
    zero: dict[str, set[int]] = {}
    for gid, idx in remove.items():
        cg = topology.groups[gid]
        for c in cg.consumers:
            where = cg.where(c)
            zero.setdefault(c, set()).update(where[i] for i in idx)
    for name, cols in zero.items():
        cols_t = torch.as_tensor(sorted(cols))

        def pre(mod, inp, cols_t=cols_t):
            x = inp[0].clone()
            x[:, cols_t] = 0
            return (x,)

        modules[name].register_forward_pre_hook(pre)
    return ref


def _prune(name: str, granularity: str):
    model = build(name)
    pruned, res = snacs.prune(model, _data(), granularity=granularity, **OPTS)
    return model, pruned, res


@pytest.fixture(scope="module")
def results():
    return {}


def _get(results, name, granularity):
    key = (name, granularity)
    if key not in results:
        results[key] = _prune(name, granularity)
    return results[key]


@pytest.mark.parametrize("granularity", ["filter", "connection"])
@pytest.mark.parametrize("name", STRUCTURES + ["mixed"])
def test_structure_prunes_exactly(name, granularity, results, tmp_path):
    model, pruned, res = _get(results, name, granularity)
    pruner = pruned.snacs_pruner
    plan = pruner.plan_
    x = torch.randn(3, *SHAPE)
    assert res.weights_after < res.weights_before  # something was removed
    pruned.eval()
    if granularity == "filter":
        assert plan.remove, "no channel was removed"
        ref = _masked_reference(model, pruner.topology_, plan.remove).eval()
        with torch.no_grad():
            torch.testing.assert_close(pruned(x), ref(x), atol=1e-5, rtol=1e-5)
        # predicted counts are the real counts of the slimmed architecture
        assert plan.predicted["weights_after"] == conv_linear_weights(pruned)
        assert plan.predicted["macs_after"] == count_macs(pruned, SHAPE)
        assert plan.predicted["weights_before"] == conv_linear_weights(model)
    else:
        slim = export_slim(pruned, SHAPE).eval()
        with torch.no_grad():
            torch.testing.assert_close(slim(x), pruned(x), atol=1e-5, rtol=1e-5)
        assert conv_linear_weights(slim) <= conv_linear_weights(model)
        assert plan.predicted["weights_after"] == nonzero_conv_linear_weights(pruned)
        assert plan.predicted["macs_after"] == count_macs(pruned, SHAPE, sparse=True)
    # the pruned network trains: forward and backward in train mode (on a copy: BN statistics)
    from snacs.apply import safe_deepcopy

    trainee = safe_deepcopy(pruned).train()
    out = trainee(x)
    assert out.shape == (3, 10)
    out.square().sum().backward()
    grads = [p.grad for p in trainee.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # save / load round trip (the block classes are importable, so the whole module is stored)
    with torch.no_grad():
        want = pruned(x)
    snacs.save(pruned, tmp_path / "m.pt")
    back = snacs.load(tmp_path / "m.pt")
    with torch.no_grad():
        torch.testing.assert_close(back(x), want, atol=1e-6, rtol=1e-6)


def test_concatenation_pairs_read_their_own_slice():
    from snacs.pairs import find_topology

    topo = find_topology(build("inception"), SHAPE)
    post = topo.pairs_of("post.0")
    # one pair per concatenated branch, each reading its own contiguous slice of the 18 inputs
    assert [p.in_index for p in post] == [list(range(0, 4)), list(range(4, 10)),
                                          list(range(10, 14)), list(range(14, 18))]
    assert [p.n_parent for p in post] == [4, 6, 4, 4]
    dense = find_topology(build("dense"), SHAPE)
    # the stem's 8 channels reach the transition conv at 0..7, the last dense layer's at 16..19
    trans = {p.name: p.in_index for p in dense.pairs_of("trans")}
    assert trans["trans<stem"] == list(range(8)) and trans["trans<dense.2.conv"] == [16, 17, 18, 19]


def test_grouped_convolutions_remove_whole_units():
    model, pruned, _ = _prune("resnext", "filter")
    g_before = dict(model.named_modules())["block.grouped.0"]
    g_after = dict(pruned.named_modules())["block.grouped.0"]
    assert g_after.groups == g_before.groups == 4
    assert g_after.in_channels % 4 == 0 and g_after.out_channels % 4 == 0
    assert g_after.in_channels < g_before.in_channels or g_after.out_channels < g_before.out_channels
    topo = pruned.snacs_pruner.topology_
    for gid, idx in pruned.snacs_pruner.plan_.remove.items():
        units = topo.groups[gid].units
        if units:  # every removed channel takes its whole unit (one channel per conv group)
            assert all(set(u) <= set(idx) or not set(u) & set(idx) for u in units)


def test_grouped_phi_is_block_diagonal():
    from snacs.pairs import find_topology
    from snacs.scores import child_weight

    model = build("resnext")
    topo = find_topology(model, SHAPE)
    p = topo.pair("block.grouped.0")
    w = child_weight(model, p)
    real = dict(model.named_modules())["block.grouped.0"].weight
    assert w.shape == (16, 16, 3, 3)
    for j in range(4):  # output group j reads input group j only
        blk = slice(4 * j, 4 * j + 4)
        torch.testing.assert_close(w[blk, blk], real[blk])
        rest = torch.ones(16, dtype=torch.bool)
        rest[blk] = False
        assert (w[blk][:, rest] == 0).all()


@pytest.mark.parametrize("name, producer, words", [
    ("shuffle", "stem.0", "channel shuffle"),
    ("split", "stem.0", "split"),
])
def test_unprunable_layouts_are_kept_whole_with_a_reason(name, producer, words):
    from snacs.pairs import find_topology

    topo = find_topology(build(name), SHAPE)
    cg = next(g for g in topo.groups if producer in g.producers)
    assert not cg.prunable and words in cg.reason
    # the rest of the network still prunes
    assert any(g.prunable for g in topo.groups)


def test_unused_layer_has_no_macs():
    """EfficientNet code builds an expand conv it skips with expansion 1 (the KeyError of #18)."""
    model = build("mbconv_se")
    _, pruned, res = _prune("mbconv_se", "filter")
    plan = pruned.snacs_pruner.plan_
    assert plan.predicted["macs_before"] == count_macs(model, SHAPE)
    unused = dict(model.named_modules())["layers.0.expand.0"]
    assert plan.predicted["weights_before"] == conv_linear_weights(model)
    assert unused.weight.numel() > 0


@pytest.mark.slow  # ~25 s, most of it the run report's plots and the test-set evaluation
def test_mixed_model_prunes_through_the_cli(tmp_path, capsys):
    from snacs.cli import main

    path = tmp_path / "mixed.pt"
    snacs.save(build("mixed"), path)
    out = tmp_path / "run"
    code = main(["prune", "--checkpoint", str(path), "--dataset", "synthetic",
                 "--samples-per-class", "6", "--estimator", "gaussian", "--groups", "4",
                 "--limits", "0.4", "--out", str(out), "--no-progress", "--no-latency",
                 "--force"])  # random weights: past the base check (chance accuracy)
    assert code == 0, capsys.readouterr().err
    slim = snacs.load(out / "model.pt")
    before = conv_linear_weights(build("mixed"))
    assert conv_linear_weights(slim) < before
    assert slim(torch.randn(2, 3, 32, 32)).shape == (2, 10)
