"""Global allocation: the budget is met with the fewest units, by the lowest layer-normalised
scores, never the protected or the best unit of a layer; SNACS(allocation="global") end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import snacs
from snacs.allocation import global_allocation
from snacs.errors import ConfigError, TargetError
from snacs.metrics import conv_linear_weights, count_macs
from snacs.pairs import find_topology
from snacs.plan import Plan, count_plan

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = snacs.create_model("simplecnn").eval()
    topo = find_topology(model, SHAPE)
    gids = [g.id for g in topo.groups if g.prunable and any(p.group == g.id for p in topo.pairs)]
    return model, topo, gids


def _removed(model, topo, remove, key):
    return count_plan(model, topo, Plan(granularity="filter", mode="target", remove=remove))[key]


@pytest.mark.parametrize("metric,key", [("params", "weights_removed"), ("macs", "macs_removed")])
def test_meets_budget_with_fewest_lowest_units(net, metric, key):
    model, topo, gids = net
    rng = np.random.default_rng(1)
    imp = {g: rng.random(topo.groups[g].channels) + 0.1 for g in gids}
    remove, pred = global_allocation(model, topo, imp, 0.3, metric)
    assert pred[key] >= 0.3
    assert pred[key] == pytest.approx(_removed(model, topo, remove, key))
    # the chosen units are exactly the k lowest normalised scores (best of each layer excluded)
    norm = {g: imp[g] / imp[g].mean() for g in gids}
    cands = sorted((norm[g][c], g, c) for g in gids
                   for c in np.argsort(-norm[g], kind="stable")[1:])
    k = sum(len(v) for v in remove.values())
    chosen = {(g, c) for _, g, c in cands[:k]}
    assert chosen == {(g, c) for g, v in remove.items() for c in v}
    # one unit fewer falls short: minimal
    fewer: dict[int, list[int]] = {}
    for _, g, c in cands[: k - 1]:
        fewer.setdefault(g, []).append(int(c))
    assert _removed(model, topo, fewer, key) < 0.3


def test_protected_best_and_caps(net):
    model, topo, gids = net
    g0 = gids[0]
    n = topo.groups[g0].channels
    imp = {g: np.linspace(1, 2, topo.groups[g].channels) for g in gids}
    imp[g0] = np.full(n, 1e-3)
    imp[g0][0] = 1.0  # the best unit of g0
    # without constraints g0 loses everything but its best channel first
    remove, _ = global_allocation(model, topo, imp, 0.05, "params")
    assert 0 not in remove.get(g0, [])
    remove, _ = global_allocation(model, topo, imp, 0.2, "params",
                                  protected={g0: {1, 2}}, caps={g0: 0.5})
    assert not {0, 1, 2} & set(remove.get(g0, []))
    assert len(remove.get(g0, [])) <= n // 2


def test_units_remove_whole_groups(net):
    model, topo, gids = net
    g0 = gids[0]
    n = topo.groups[g0].channels
    units = {g: np.arange(topo.groups[g].channels) // 2 for g in gids}
    imp = {g: np.arange(1, topo.groups[g].channels // 2 + 1, dtype=float) for g in gids}
    remove, _ = global_allocation(model, topo, imp, 0.3, "params", units=units)
    for chans in remove.values():
        assert len(chans) % 2 == 0 and all(c // 2 * 2 in chans and c // 2 * 2 + 1 in chans
                                           for c in chans)
    assert n > 2


def test_unreachable(net):
    model, topo, gids = net
    imp = {g: np.ones(topo.groups[g].channels) for g in gids}
    with pytest.raises(TargetError, match="out of reach"):
        global_allocation(model, topo, imp, 0.9999, "params")


def test_snacs_global_end_to_end():
    from snacs.data import synthetic

    torch.manual_seed(0)
    model = snacs.create_model("simplecnn").eval()
    data = synthetic("train", n_per_class=8, shape=SHAPE, seed=0)
    p = snacs.SNACS(allocation="global", target=0.4, target_metric="macs", samples_per_class=8,
                    limits="none").fit(model, data)
    pruned = p.apply(model)
    m0, m1 = count_macs(model, SHAPE), count_macs(pruned, SHAPE)
    assert 1 - m1 / m0 >= 0.4
    assert p.plan_.predicted["macs_after"] == m1
    assert p.plan_.predicted["weights_after"] == conv_linear_weights(pruned)
    for gid, s in p.sensitivity_.items():
        assert not set(s.protected) & set(p.plan_.remove.get(gid, []))
    # ul + global: the limit-based plan's budget, spread differently
    q = snacs.SNACS(allocation="global", samples_per_class=8).fit(model, data)
    from snacs.plan import make_plan

    ul = make_plan(model, q.topology_, q.scores_, q.limits_, q.sensitivity_, mode="ul")
    assert q.plan_.mode == "ul"
    if ul.predicted["weights_removed"] > 0:
        assert q.plan_.predicted["weights_removed"] >= ul.predicted["weights_removed"]
    with pytest.raises(ConfigError, match="probe limits"):
        snacs.SNACS(allocation="global", limits="none").validate()
    with pytest.raises(ConfigError, match="granularity='filter'"):
        snacs.SNACS(allocation="global", granularity="connection", target=0.3).validate()
    with pytest.raises(ConfigError, match="unknown allocation"):
        snacs.SNACS(allocation="magic").validate()


@pytest.mark.slow
def test_cli_allocation_global(tmp_path):
    import json

    from snacs.cli import main

    out = tmp_path / "p"
    code = main(["prune", "--model", "simplecnn", "--dataset", "synthetic", "--samples-per-class",
                 "8", "--estimator", "gaussian", "--groups", "8", "--limits", "none",
                 "--allocation", "global", "--target", "0.4", "--target-metric", "macs",
                 "--out", str(out), "--no-progress", "--no-latency"])
    assert code == 0
    res = json.loads((out / "result.json").read_text())
    assert res["settings"]["allocation"] == "global"
    assert json.loads((out / "settings.json").read_text())["allocation"] == "global"
    slim = snacs.load(out / "model.pt")
    assert 1 - count_macs(slim, (3, 32, 32)) / res["macs_before"] >= 0.4


def test_select_allocation_keeps_the_more_accurate_plan(net):
    """calibration_accuracy is the pruned model's accuracy after BN re-estimation on the same
    batches; select_allocation keeps the best, ties by cross-entropy then order."""
    from unittest import mock

    from snacs import allocation as A
    from snacs.apply import apply_plan, recalibrate_bn
    from snacs.data import synthetic
    from snacs.evaluation import evaluate

    model, topo, gids = net
    data = synthetic("train", n_per_class=6, shape=SHAPE, seed=1)
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.as_tensor([data[i][1] for i in range(len(data))])
    batches = [(x[:30], y[:30]), (x[30:], y[30:])]
    imp = {g: np.arange(topo.groups[g].channels, dtype=float) + 1.0 for g in gids}
    remove, _ = global_allocation(model, topo, imp, 0.3, "params")
    plan = Plan(granularity="filter", mode="target", remove=remove)
    got = A.calibration_accuracy(model, topo, plan, batches)
    ref = apply_plan(model, topo, plan)
    recalibrate_bn(ref, batches)

    class _Set:  # the batches as a dataset, for snacs.evaluation.evaluate
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return x[i], int(y[i])

    want = evaluate(ref, _Set())
    assert got["accuracy"] == pytest.approx(want["accuracy"])
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert got["samples"] == len(y)
    # the choice follows the proxy: best accuracy, then lower loss, then the first
    fake = {"a": {"accuracy": 50.0, "loss": 1.0}, "b": {"accuracy": 60.0, "loss": 2.0},
            "c": {"accuracy": 60.0, "loss": 1.5}, "d": {"accuracy": 60.0, "loss": 1.5}}
    with mock.patch.object(A, "calibration_accuracy", side_effect=lambda m, t, p, b: fake[p]):
        name, trials = A.select_allocation(model, topo, {k: k for k in fake}, batches)
    assert name == "c" and trials == fake
    with pytest.raises(TargetError, match="no allocation"):
        A.select_allocation(model, topo, {}, batches)


def test_snacs_select_end_to_end(tmp_path):
    from snacs.data import synthetic
    from snacs.report import write_report

    torch.manual_seed(0)
    model = snacs.create_model("simplecnn").eval()
    data = synthetic("train", n_per_class=8, shape=SHAPE, seed=0)
    kw = dict(target=0.4, target_metric="macs", samples_per_class=8, estimator="gaussian",
              groups=8, relax_limits=True)
    p = snacs.SNACS(allocation="select", **kw).fit(model, data)
    assert p.allocation_ in ("limits", "global")
    trials = p.allocation_trials_
    assert set(trials) == {"limits", "global"}
    other = "global" if p.allocation_ == "limits" else "limits"
    assert (trials[p.allocation_]["accuracy"], -trials[p.allocation_]["loss"]) >= \
        (trials[other]["accuracy"], -trials[other]["loss"])
    # the kept plan is the one that allocation alone makes
    alone = snacs.SNACS(allocation=p.allocation_, **kw).fit(model, data)
    assert p.plan_.remove == alone.plan_.remove
    pruned = p.apply(model)
    assert 1 - count_macs(pruned, SHAPE) / count_macs(model, SHAPE) >= 0.4
    _, res = snacs.prune(model, data, allocation="select", measure_latency=False, **kw)
    assert res.allocation_used == p.allocation_ and res.allocation_trials == trials
    md = write_report(tmp_path, res).read_text()
    assert f"Allocation across layers: **{p.allocation_}**, chosen by `allocation=select`" in md
    # a target the fixed limits cannot reach leaves the global plan alone
    q = snacs.SNACS(allocation="select", target=0.6, target_metric="params", limits=0.3,
                    samples_per_class=8, estimator="gaussian", groups=8).fit(model, data)
    assert q.allocation_ == "global" and "unreachable" in q.allocation_trials_["limits"]
    assert q.plan_.predicted["weights_removed"] >= 0.6
    with pytest.raises(ConfigError, match="mode='target'"):
        snacs.SNACS(allocation="select").validate()
    snacs.SNACS(allocation="select", target=0.3, target_metric="latency").validate()  # priced
